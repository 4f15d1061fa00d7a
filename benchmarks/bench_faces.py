"""Faces stage speed: per-frame MTCNN (naive) vs the stage's key-frame + window-cascade tracker.

Both run in this one process, same threads, on the same decoded frames (decode time excluded
for both, then the stage's own streaming decode is timed separately). Prints frames/s
(median of --repeats runs), the speed ratio and the agreement: the share of frames whose fast
box has IoU >= 0.9 with the naive box.

    .venv/bin/python benchmarks/bench_faces.py --repeats 3 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def naive(frames, mtcnn):
    boxes = []
    for f in frames:
        b, _p, _l = mtcnn.detect(f, landmarks=True)
        boxes.append(None if b is None else b[0])  # MTCNN's own order: largest first
    return boxes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long-seconds", type=float, default=20.0)
    ap.add_argument("--key-interval", type=int, default=None)
    args = ap.parse_args()

    import torch
    from facenet_pytorch import MTCNN

    from avpipe.extractors.faces import Faces, FacesConfig, iter_frames
    from avpipe.extractors.tracking import iou
    from avpipe.sample.media import face_frames, write_clip

    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp())
    long = tmp / "long_640x480.mp4"
    n_long = int(args.long_seconds * 25)
    write_clip(long, face_frames(n_long, size=(640, 480)), fps=25.0)
    clips = [("talking_head 480x360", root / "tests/fixtures/media/talking_head.mp4"),
             (f"generated {args.long_seconds:g}s 640x480", long)]
    cfg = FacesConfig() if args.key_interval is None else FacesConfig(key_interval=args.key_interval)
    print(f"threads={args.threads} repeats={args.repeats} fast config: {cfg}")
    mt = MTCNN(device="cpu")
    stage = Faces(cfg)
    stage.ensure_loaded()
    torch.set_num_threads(args.threads)
    print(f"{'clip':28s} {'frames':>6s} {'naive f/s':>10s} {'fast f/s':>9s} {'ratio':>6s} "
          f"{'IoU>=.9':>8s} {'min IoU':>8s} {'full det':>8s} {'fast+decode f/s':>15s}")
    for name, path in clips:
        frames = list(iter_frames(path))
        n = len(frames)
        tn, tf, td = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter(); nb = naive(frames, mt); tn.append(time.perf_counter() - t)
            t = time.perf_counter(); r = stage.process(iter(frames), n); tf.append(time.perf_counter() - t)
            t = time.perf_counter(); stage.process(iter_frames(path), n); td.append(time.perf_counter() - t)
        ious = np.array([iou(b, r.data[i, None, :4])[0] if b is not None and r.mask[i] else
                         (1.0 if b is None and not r.mask[i] else 0.0) for i, b in enumerate(nb)])
        mn, mf, md = statistics.median(tn), statistics.median(tf), statistics.median(td)
        print(f"{name:28s} {n:6d} {n / mn:10.1f} {n / mf:9.1f} {mn / mf:6.2f} "
              f"{(ious >= 0.9).mean():8.3f} {ious.min():8.3f} {r.attrs['full_detections']:8d} {n / md:15.1f}")


if __name__ == "__main__":
    main()
