"""Crop-tree ingest benchmark: wall time of ``ingest_crop_tree`` (faces only, and faces + visual
with the weight-free ``hog`` backbone) on a synthetic ``cropped_aligned`` tree.

Why: the ingest runs through the runner (the crop tree as the given source of ``faces``); this
measures what that costs against the code it replaced. Run it at two commits to compare, e.g.
the code before the change exported with ``git archive <commit> | tar -x -C /tmp/old`` and
``PYTHONPATH=/tmp/old python benchmarks/bench_crop_ingest.py``. Each configuration runs
``--repeat`` times into a fresh cache; the median is printed.

    python benchmarks/bench_crop_ingest.py [--videos 4] [--seconds 20] [--size 112] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_tree(root: Path, n_videos: int, seconds: float, size: int) -> tuple[Path, Path]:
    """``n_videos`` 10 fps clips and one crop folder each (every 7th frame without a face)."""
    import cv2
    import numpy as np

    sys.path.append(str(REPO))  # tests.media only; avpipe comes from PYTHONPATH
    from tests.media import make_clip

    videos, crops = root / "videos", root / "cropped_aligned"
    rng = np.random.default_rng(0)
    for i in range(n_videos):
        make_clip(videos / f"v{i}.mp4", seed=i, seconds=seconds)
        d = crops / f"v{i}"
        d.mkdir(parents=True)
        for f in range(1, int(seconds * 10) + 1):
            if f % 7:
                img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                cv2.imwrite(str(d / f"{f:05d}.jpg"), cv2.GaussianBlur(img, (9, 9), 3))
    return videos, crops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import avpipe
    from avpipe.extractors.crop_tree import ingest_crop_tree

    with tempfile.TemporaryDirectory(prefix="avpipe-bench-crops-") as tmp:
        root = Path(tmp)
        videos, crops = make_tree(root, args.videos, args.seconds, args.size)
        out = {}
        for backbone in (None, "hog"):
            times = []
            for r in range(args.repeat):
                cache = root / f"cache-{backbone}-{r}"
                t0 = time.perf_counter()
                rep = ingest_crop_tree(crops, videos, cache, backbone=backbone, log=lambda m: None)
                times.append(time.perf_counter() - t0)
                assert len(rep.ingested) == args.videos and not rep.failed, rep
                shutil.rmtree(cache)
            out[backbone or "faces only"] = round(statistics.median(times), 3)
        frames = args.videos * int(args.seconds * 10)
        print(json.dumps({"videos": args.videos, "frames": frames, "crop_size": args.size,
                          "median_s": out, "repeat": args.repeat, "code": str(Path(avpipe.__file__).parent)}))


if __name__ == "__main__":
    main()
