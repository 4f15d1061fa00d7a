"""Visual backbone speed: dlib's face ResNet through dlib (``dlib``) vs the same network in torch
from the same weights file (``dlib-torch``).

Same process, same crops (the faces stage's aligned crops of the talking-head clip, cycled to
--n), same thread count for both (dlib-bin has no BLAS and runs on one core anyway). Prints
crops/s (median of --repeats runs), the speed ratio and the largest absolute difference between
the two backbones' descriptors.

    .venv/bin/python benchmarks/bench_visual_backbones.py --n 256 --repeats 3 --threads 1

``--backbones A,B`` times other registered backbones the same way (e.g.
``dlib-torch,fer2013-mini-xception-emb``); the difference line is printed only for dlib vs dlib-torch.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256, help="crops per run (the clip's crops, cycled)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbones", default="dlib,dlib-torch", help="comma-separated registered backbones")
    args = ap.parse_args()
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]

    import torch

    from avpipe.extractors.backbones import create_backbone
    from avpipe.extractors.faces import Faces
    from avpipe.extractors.media import iter_frames

    torch.set_num_threads(args.threads)
    clip = Path(__file__).resolve().parents[1] / "tests/fixtures/media/talking_head.mp4"
    stage = Faces()
    stage.ensure_loaded()
    frames = list(iter_frames(clip))
    res = stage.process(iter(frames), len(frames))
    valid = res.extras["crops"][res.mask]
    crops = valid[np.arange(args.n) % len(valid)]
    torch.set_num_threads(args.threads)  # the faces stage may have set its own
    print(f"threads={args.threads} repeats={args.repeats} crops={len(crops)} "
          f"({len(valid)} distinct, {crops.shape[1]}x{crops.shape[2]} resized to 150x150)")
    out, rates = {}, {}
    for name in names:
        bb = create_backbone(name)
        bb.load("cpu", {})
        bb.embed(crops[:2])  # warm-up (first-call allocations, oneDNN kernel selection)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out[name] = bb.embed(crops)
            times.append(time.perf_counter() - t)
        rates[name] = len(crops) / statistics.median(times)
        print(f"{name:11s} {rates[name]:8.1f} crops/s  ({1000 / rates[name]:.1f} ms/crop)")
    if set(names) != {"dlib", "dlib-torch"}:
        base = names[0]
        for n in names[1:]:
            print(f"ratio {n}/{base}: {rates[n] / rates[base]:.1f}x")
        return
    diff = np.abs(out["dlib"] - out["dlib-torch"])
    print(f"ratio dlib-torch/dlib: {rates['dlib-torch'] / rates['dlib']:.1f}x; max |diff| = {diff.max():.2e} "
          f"(mean {diff.mean():.1e}; descriptor |max| {np.abs(out['dlib']).max():.2f})")


if __name__ == "__main__":
    main()
