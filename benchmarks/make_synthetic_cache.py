"""Generate an Aff-Wild2-sized synthetic cache through the store (avpipe.pipeline.ingest).

Full size: 594 videos, ≈2.8 M frames (mean ≈ 4 714 frames/video), visual 512-d, audio 128-d,
text 384-d, float16 (what the extractors store). ``--scale`` shrinks the number of videos.

    .venv/bin/python benchmarks/make_synthetic_cache.py --out benchmarks/out/syn --scale 0.05
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

FULL_VIDEOS, FULL_FRAMES = 594, 2_800_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/syn")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    n = max(2, round(FULL_VIDEOS * a.scale))
    mean = FULL_FRAMES / FULL_VIDEOS
    spec = SyntheticSpec(n_videos=n, min_frames=int(mean * 0.4), max_frames=int(mean * 1.6), dtype=a.dtype,
                         val_fraction=76 / 432, seed=a.seed, shard_size=16)
    out = Path(a.out)
    t = time.perf_counter()
    fps = make_corpus(out / "cache", out / "labels", spec)
    print(f"{n} videos (~{int(n * mean):,} frames) in {time.perf_counter() - t:.1f}s -> {out}")
    for m, f in fps.items():
        print(f"  {m}: {f[:16]}")


if __name__ == "__main__":
    main()
