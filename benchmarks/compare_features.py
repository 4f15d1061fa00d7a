"""What the new features carry: identity vs expression faces, log-mel vs eGeMAPS audio.

Two looks, both printed as Markdown for BENCHMARKS.md:

1. **The synthetic sample** (``avpipe sample``; valence bends a drawn mouth and picks the
   sentences, arousal drives the speech — SYNTHETIC, so the numbers only say which features can
   follow what the generator put in): unimodal baselines trained on each feature and compared
   with ``avpipe compare``:

   * ``visual`` on ``dlib-torch`` (identity) vs ``fer2013-mini-xception-emb`` (expression);
   * ``audio`` on ``logmel`` vs ``egemaps``.

   Every command is a real ``avpipe`` command in a fresh interpreter; a feature is pinned by its
   fingerprint (``--features visual=visual@FP``) since the cache holds two configs of a stage.

2. **The real test clips** (``tests/fixtures/media``; no affect labels): how much each visual
   feature moves *within* a clip against how far clips lie apart — an identity embedding should
   stay put while the face talks, an expression feature should move.

    .venv/bin/python benchmarks/compare_features.py --dir benchmarks/out/compare_features \\
        --videos 8 --epochs 30 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VISUAL = {"identity": "dlib-torch", "expression": "fer2013-mini-xception-emb"}
AUDIO = ("logmel", "egemaps")
TRAIN = ["--window", "64", "--hop", "16", "--batch-size", "8", "--clip-len", "1", "--device", "cpu"]


def avpipe(*args: str) -> None:
    print("$ avpipe " + " ".join(shlex.quote(a) for a in args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "avpipe", *args], check=True, stdout=sys.stderr)


def fingerprint(cache: Path, stage: str, config: Path | None) -> str:
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.store import Cache

    return Cache(cache).resolve(stage, PipelineConfig.load(config) if config else None)


def synthetic(root: Path, n_videos: int, epochs: int, seeds: list[int], jobs: int) -> None:
    if not (root / "README.txt").exists():
        avpipe("sample", "--out", str(root), "--videos", str(n_videos))
    cache = root / "cache"
    fps: dict[str, str] = {}
    for name, bb in VISUAL.items():
        cfg = root / f"visual-{name}.toml"
        cfg.write_text(f'[stages.visual]\nbackbone = "{bb}"\n')
        avpipe("extract", "--videos", str(root / "videos"), "--cache", str(cache), "--config", str(cfg),
               "--stages", "visual", "--jobs", str(jobs), "--no-progress")
        fps[f"visual-{name}"] = "visual=visual@" + fingerprint(cache, "visual", cfg)[:16]
    avpipe("extract", "--videos", str(root / "videos"), "--cache", str(cache), "--stages", ",".join(AUDIO),
           "--jobs", str(jobs), "--no-progress")
    for st in AUDIO:
        fps[f"audio-{st}"] = f"audio={st}@" + fingerprint(cache, st, None)[:16]
    runs = root / "runs"
    for run, feats in fps.items():
        model = run.split("-")[0]
        for seed in seeds:
            out = runs / run / f"seed{seed}"
            if (out / "summary.json").exists():
                continue
            avpipe("train", "--fusion", model, "--labels", str(root / "labels"), "--cache", str(cache),
                   "--features", feats, "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), *TRAIN)
    avpipe("compare", *[str(runs / r) for r in fps], "--out", str(root / "compare"))
    print((root / "compare" / "compare.md").read_text())


def real_clips(jobs: int, work: Path) -> None:
    """Within-clip movement vs between-clip spread of each visual feature on the test clips."""
    from avpipe.pipeline.chunks import dense  # noqa: F401  (import check: run from the repo root)
    from avpipe.pipeline.store import Cache

    media = ROOT / "tests" / "fixtures" / "media"
    vids = work / "clips"
    vids.mkdir(parents=True, exist_ok=True)
    for name in ("talking_head.mp4", "short_silent.mp4", "two_faces_tone.mp4", "vfr.mp4"):
        if not (vids / name).exists():
            (vids / name).write_bytes((media / name).read_bytes())
    cache = work / "cache"
    print("\n| visual feature | dim | within-clip movement (mean frame-to-frame distance / between-clip distance) "
          "| within-clip spread (std / between-clip std) |\n|---|---|---|---|")
    for label, bb in (("identity", "dlib-torch"), ("expression (probabilities)", "fer2013-mini-xception"),
                      ("expression (embedding)", "fer2013-mini-xception-emb")):
        cfg = work / f"{bb}.toml"
        cfg.write_text(f'[stages.visual]\nbackbone = "{bb}"\n')
        avpipe("extract", "--videos", str(vids), "--cache", str(cache), "--config", str(cfg), "--stages", "visual",
               "--jobs", str(jobs), "--no-progress")
        from avpipe.pipeline.config import PipelineConfig

        c = Cache(cache)
        fp = c.resolve("visual", PipelineConfig.load(cfg))
        means, steps, stds = [], [], []
        for key, _ in c.videos():
            e = c.read("visual", key, fingerprint=fp)
            d = np.asarray(e.data, np.float64)[np.asarray(e.mask, bool)]
            if len(d) < 3:
                continue
            means.append(d.mean(0))
            steps.append(np.linalg.norm(np.diff(d, axis=0), axis=1).mean())
            stds.append(np.sqrt(d.var(0).sum()))
        m = np.stack(means)
        between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(m) for b in m[i + 1:]])
        between_std = np.sqrt(m.var(0).sum())
        print(f"| {label} (`{bb}`) | {m.shape[1]} | {np.mean(steps) / between:.3f} | "
              f"{np.mean(stds) / between_std:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=ROOT / "benchmarks" / "out" / "compare_features")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-sample", action="store_true", help="only the real-clip look")
    a = ap.parse_args()
    if not a.skip_sample:
        synthetic(a.dir / "sample", a.videos, a.epochs, [int(s) for s in a.seeds.split(",")], a.jobs)
    real_clips(a.jobs, a.dir / "real")
    return 0


if __name__ == "__main__":
    sys.exit(main())
