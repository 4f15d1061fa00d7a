"""Epoch time per fusion model (training pass + validation), default model sizes, T=300 hop 200.

    .venv/bin/python benchmarks/make_synthetic_cache.py --out benchmarks/out/syn_small --scale 0.01
    .venv/bin/python benchmarks/bench_epochs.py --data benchmarks/out/syn_small --device cpu

On a GPU: ``--device cuda`` (AMP fp16 on). Prints train seconds/epoch, windows/s and epoch seconds.
"""
from __future__ import annotations

import argparse
import tempfile
import time

MODELS = ["audio", "visual", "text", "concat", "ca", "jca", "rja", "iaca", "rjcma", "maven"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="benchmarks/out/syn_small")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (first includes warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--window", type=int, default=300)
    a = ap.parse_args()
    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.train import train

    print(f"{'model':8s} {'train s/epoch':>14s} {'windows/s':>10s} {'epoch s':>8s} {'val CCC':>8s}")
    for m in a.models.split(","):
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(fusion=m, labels=f"{a.data}/labels", cache=f"{a.data}/cache", out=out,
                              epochs=a.epochs, batch_size=a.batch_size, window=a.window, device=a.device,
                              patience=100, plot_videos=1)
            t = time.perf_counter()
            train(cfg, log=lambda s: None)
            import csv

            rows = list(csv.DictReader(open(f"{out}/metrics.csv")))
            r = rows[-1]
            tr = float(r["train_s"])
            print(f"{m:8s} {tr:14.2f} {int(r['windows']) / tr:10.1f} {float(r['epoch_s']):8.2f} "
                  f"{float(r['val_ccc_mean']):8.3f}   (total {time.perf_counter() - t:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
