"""Training throughput per fusion model, side by side, at each model's published settings.

Default (``--mode steps``): for every model, the settings ``--fusion NAME`` resolves to (window,
clip length, batch size, optimiser), a synthetic batch of that shape (dims of the default cache:
visual 512, audio 128, text 384) and the trainer's step (forward, CCC loss + the model's
auxiliary losses, backward, grad clip, optimiser step). Reports the median step time over
``--steps`` timed steps (after ``--warmup``), windows/s and frames/s, and the ratio to JCA's
windows/s. No data path: this isolates the model; ``bench_datapath.py`` measures the data path.

    .venv/bin/python benchmarks/bench_epochs.py --threads 2
    .venv/bin/python benchmarks/bench_epochs.py --precision bf16 --models jca,rja,iaca,maven

``--mode epoch`` trains every model for ``--epochs`` epochs on a synthetic cache (as written by
``make_synthetic_cache.py``) and reports the last epoch's train seconds and windows/s.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

MODELS = ["jca", "rja", "dca", "iaca", "rjcma", "maven", "rja-shared", "rjcma-shared", "maven-paper",
          "ca", "concat", "audio", "visual", "text"]
DIMS = {"visual": 512, "audio": 128, "text": 384}


def bench_steps(name: str, steps: int, warmup: int, precision: str, batch: int | None,
                recipe: str | None = None) -> dict[str, float]:
    import torch

    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.metrics import compute_loss
    from avpipe.fusion.models import create_model, get_model_class
    from avpipe.fusion.train import make_optimizer

    cfg = TrainConfig(fusion=name, batch_size=batch, recipe=recipe).resolved()
    mods = get_model_class(name).required_modalities(cfg.model)
    torch.manual_seed(0)
    model = create_model(name, {m: DIMS[m] for m in mods}, cfg.window, **cfg.model)
    model.train()
    opt = make_optimizer(cfg, model.parameters())
    B, T = int(cfg.batch_size), int(cfg.window)
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(B, T, DIMS[m], generator=g) for m in mods}
    mask = {m: torch.rand(B, T, generator=g) > 0.1 for m in mods}
    y = torch.rand(B, T, 2, generator=g) * 2 - 1
    ym = torch.rand(B, T, generator=g) > 0.2
    amp = precision == "bf16"
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            pred = model(x, mask)
        loss = compute_loss(cfg.loss, pred.float(), y, ym, cfg.aux_losses or {})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:  # 0 = off (the authors' recipe of jca, rja, dca, rjcma)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"window": T, "clip": int(cfg.clip_len), "batch": B, "step_s": med, "windows_s": B / med,
            "frames_s": B * T / med}


def main_steps(a: argparse.Namespace) -> None:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"threads {torch.get_num_threads()}, precision {a.precision}, median of {a.steps} steps after "
          f"{a.warmup} warm-up")
    print(f"{'model':13s} {'window':>6s} {'clip':>4s} {'batch':>5s} {'step s':>8s} {'windows/s':>10s} "
          f"{'frames/s':>9s} {'JCA/x':>6s}")
    ref = None
    for m in a.models.split(","):
        r = bench_steps(m, a.steps, a.warmup, a.precision, a.batch_size, a.recipe)
        if m == "jca":
            ref = r["windows_s"]
        ratio = f"{ref / r['windows_s']:6.2f}" if ref else "     -"
        print(f"{m:13s} {r['window']:6d} {r['clip']:4d} {r['batch']:5d} {r['step_s']:8.3f} {r['windows_s']:10.1f} "
              f"{r['frames_s']:9.0f} {ratio}", flush=True)


def main_epoch(a: argparse.Namespace) -> None:
    import csv

    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.train import train

    print(f"{'model':13s} {'train s/epoch':>14s} {'windows/s':>10s} {'epoch s':>8s} {'val CCC':>8s}")
    for m in a.models.split(","):
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(fusion=m, labels=f"{a.data}/labels", cache=f"{a.data}/cache", out=out,
                              epochs=a.epochs, batch_size=a.batch_size, device=a.device, patience=100,
                              plot_videos=1, num_threads=a.threads,
                              amp="bf16" if a.precision == "bf16" else "auto")
            t = time.perf_counter()
            train(cfg, log=lambda s: None)
            r = list(csv.DictReader(open(f"{out}/metrics.csv")))[-1]
            tr = float(r["train_s"])
            print(f"{m:13s} {tr:14.2f} {int(r['windows']) / tr:10.1f} {float(r['epoch_s']):8.2f} "
                  f"{float(r['val_ccc_mean']):8.3f}   (total {time.perf_counter() - t:.1f}s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["steps", "epoch"], default="steps")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default: each model's")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--recipe", choices=["authors", "avpipe"], default=None,
                    help="default: each name's (authors for the published names; docs/recipes.md)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--data", default="benchmarks/out/syn_small", help="epoch mode: synthetic cache folder")
    ap.add_argument("--device", default="cpu", help="epoch mode")
    ap.add_argument("--epochs", type=int, default=2, help="epoch mode: the last epoch is timed")
    a = ap.parse_args()
    (main_steps if a.mode == "steps" else main_epoch)(a)


if __name__ == "__main__":
    main()
