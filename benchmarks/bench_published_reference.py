"""Training-step time of ``jca``, ``rja``, ``dca`` and ``rjcma`` against batched modules of the
authors' layer structure (``reference_modules.py``), interleaved in one process, medians.

Why: the must-hold of issue #20 — each published model's training step stays at or above the
authors' own module on the same machine. The authors' code is not in the repository; each
reference is written from the published equations and shapes and is first checked to be the
same function as avpipe's model (float64, eval mode, weights mapped, ≤ 1e-10 at the published
shapes); a model whose check fails is not timed.

One step = forward, loss, backward, optimiser step, at the published settings: the window, clip
length, widths and batch of ``--fusion NAME`` under its default recipe (``authors``), the same
optimiser (Adam / AdamW, lr, weight decay) and no gradient clipping on both sides.

* avpipe: what the trainer runs — per-frame cached rows (B, T, D) with masks, pooled to clip
  tokens inside the model, per-frame output, the recipe's loss (``compute_loss``);
* avpipe-tokens: avpipe's module on the reference's inputs — the same clip tokens, all valid,
  through ``fuse`` (no pooling), per-token output and loss: the module-for-module comparison
  (for rjcma, one token per frame, it is the same computation as avpipe);
* reference: what the authors' step runs — one token per clip (B, L, 512) as their backbones
  deliver it (no pooling, no masks), per-token output, their loss written out here (1 − CCC over
  the flattened batch with unbiased std for jca/rja/dca; per window for rjcma).

Both start from the same weights. Rounds alternate which side runs first; one warm-up step each.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_published_reference.py --rounds 7 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_modules import AUTHORS_DIMS, INPUT_ORDER, PUBLISHED, build_pair, max_difference  # noqa: E402

TOLERANCE = 1e-10
SIDES = ["reference", "avpipe", "avpipe-tokens"]


def praveen_ccc_loss(pred, target, eps_den: bool):
    """The A-V repos' loss per dimension over the flattened batch, summed over the dimensions:
    ρ = Σ dp·dt / (√Σdp² √Σdt² + 1e-8), unbiased std, 1 − 2ρ s_p s_t / (s_p² + s_t² + (p̄ − t̄)²)."""
    import torch

    p, t = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    dp, dt = p - p.mean(0), t - t.mean(0)
    rho = (dp * dt).sum(0) / (torch.sqrt((dp ** 2).sum(0)) * torch.sqrt((dt ** 2).sum(0)) + 1e-8)
    sp, st = p.std(0), t.std(0)
    den = sp ** 2 + st ** 2 + (p.mean(0) - t.mean(0)) ** 2 + (1e-8 if eps_den else 0.0)
    return (1 - 2 * rho * sp * st / den).sum()


def rjcma_ccc_loss(pred, target):
    """RJCMA's loss: per window along time (unbiased variances, biased covariance), batch mean,
    summed over the dimensions."""
    mp, mt = pred.mean(1, keepdim=True), target.mean(1, keepdim=True)
    cov = ((pred - mp) * (target - mt)).mean(1)
    ccc = 2 * cov / (pred.var(1) + target.var(1) + (mp - mt).squeeze(1) ** 2)
    return (1 - ccc).mean(0).sum()


def make_step(side: str, name: str, batch: int | None, seed: int = 0):
    """A closure running one training step of ``name``: ``side`` "reference", "avpipe" or
    "avpipe-tokens"."""
    import torch

    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.metrics import compute_loss
    from avpipe.fusion.train import make_optimizer

    model, ref, cfg = build_pair(name, seed=seed)
    cfg = TrainConfig(fusion=name, batch_size=batch).resolved() if batch else cfg
    B, T, K, L = int(cfg.batch_size), model.window, model.clip_len, model.tokens
    g = torch.Generator().manual_seed(seed + 1)
    y = torch.rand(B, T, 2, generator=g) * 2 - 1
    y_tok = y[:, K - 1::K]  # a clip's label is its last frame's
    if side == "avpipe":
        x = {m: torch.randn(B, T, d, generator=g) for m, d in model.dims.items()}
        mask = {m: torch.rand(B, T, generator=g) > 0.1 for m in x}
        ym = torch.ones(B, T, dtype=torch.bool)
        net = model

        def loss_fn():
            return compute_loss(cfg.loss, model(x, mask).float(), y, ym, cfg.aux_losses or {})
    elif side == "avpipe-tokens":
        xt = {m: torch.randn(B, L, d, generator=g) for m, d in model.dims.items()}
        mt = {m: torch.ones(B, L, dtype=torch.bool) for m in xt}
        ym = torch.ones(B, L, dtype=torch.bool)
        net = model

        def loss_fn():
            return compute_loss(cfg.loss, model.fuse(xt, mt).float(), y_tok, ym, cfg.aux_losses or {})
    else:
        del model
        tokens = [torch.randn(B, L, AUTHORS_DIMS[name][m], generator=g) for m in INPUT_ORDER[name]]
        net = ref

        def loss_fn():
            out = ref(*tokens)
            return rjcma_ccc_loss(out, y_tok) if name == "rjcma" else praveen_ccc_loss(out, y_tok, name == "jca")
    net.train()
    opt = make_optimizer(cfg, net.parameters())

    def step() -> float:
        t0 = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        return time.perf_counter() - t0

    step.net = net  # type: ignore[attr-defined]  # for the tests: the module this step trains
    return step, B, T, K


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(PUBLISHED), help=f"comma-separated, of {', '.join(PUBLISHED)}")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds, one timed step per side each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1)")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch for both sides instead of the published one (memory); printed in the table")
    a = ap.parse_args()
    import torch

    names = [n.strip() for n in a.models.split(",") if n.strip()]
    bad = [n for n in names if n not in PUBLISHED]
    if bad:
        ap.error(f"no reference for {', '.join(bad)}; choose from {', '.join(PUBLISHED)}")
    torch.set_num_threads(a.threads)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; threads {a.threads}, fp32, "
          f"median of {a.rounds} interleaved rounds (1 warm-up step each side first)")
    rows = []
    for n in names:
        diff = max_difference(n)
        print(f"{n}: max |avpipe - reference| = {diff:.1e} (float64, eval, mapped weights, batch 2)", flush=True)
        if not diff <= TOLERANCE:
            print(f"{n}: NOT the same function (> {TOLERANCE:g}); not timed", flush=True)
            continue
        steps = {}
        for side in SIDES:
            steps[side], B, T, K = make_step(side, n, a.batch)
        times: dict[str, list[float]] = {s: [] for s in steps}
        for s in steps.values():
            s()  # warm-up
        for r in range(a.rounds):
            order = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]  # who goes first rotates
            for side in order:
                times[side].append(steps[side]())
        med = {s: statistics.median(v) for s, v in times.items()}
        rows.append((n, T, K, B, med))
        print(f"{n}: " + ", ".join(f"{s} {v:.3f} s" for s, v in med.items()), flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{'model':6s} {'window/clip':>11s} {'batch':>5s} {'side':14s} {'step s':>8s} {'windows/s':>9s} "
          f"{'vs reference':>12s}")
    for n, T, K, B, med in rows:
        for s, v in med.items():
            print(f"{n:6s} {f'{T}/{K}':>11s} {B:5d} {s:14s} {v:8.3f} {B / v:9.1f} {med['reference'] / v:11.2f}x")


if __name__ == "__main__":
    main()
