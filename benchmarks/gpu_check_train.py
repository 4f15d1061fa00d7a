"""The GPU check's training part: every model's epoch at fp32, fp16 and bf16 on an Aff-Wild2-sized
bank, CCC of the AMP runs against fp32, first fp32 losses against the CPU (see gpu_check.py)."""
from __future__ import annotations

import argparse
import dataclasses
import time
import traceback
from typing import Any

from gpu_check_common import (AMP_OF, CCC_TOL, EPOCH_GOAL_S, LOSS_RTOL, Budget, Report, Sizes, peak_memory,
                              reset_peak, sync)


# ----------------------------------------------------------------------------- train helpers
def bank_subset(bank: Any, mods: tuple[str, ...]) -> Any:
    """The same bank with only ``mods`` (no copy)."""
    return dataclasses.replace(bank, x={m: bank.x[m] for m in mods}, valid={m: bank.valid[m] for m in mods},
                               _norm={m: v for m, v in bank._norm.items() if m in mods})


def bank_to(bank: Any, device: Any) -> Any:
    """A copy of a bank on another device."""
    return dataclasses.replace(
        bank, x={m: t.to(device) for m, t in bank.x.items()}, valid={m: t.to(device) for m, t in bank.valid.items()},
        y=bank.y.to(device), y_valid=bank.y_valid.to(device), offsets=bank.offsets.to(device), device=device,
        _norm={m: (mu.to(device), sd.to(device)) for m, (mu, sd) in bank._norm.items()})


def tile_bank(bank: Any, target_rows: int) -> Any:
    """The bank's tracks repeated (whole copies, on the bank's device) to about ``target_rows``
    rows, the zero sentinel row kept last: an epoch of that many frames with real
    (normalised, learnable) features, without a cache that size on disk."""
    import torch

    n = bank.n_rows
    reps = max(1, round(target_rows / max(n, 1)))

    def tile(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:n]] * reps + [t[n:]])

    lengths = torch.diff(bank.offsets)
    offsets = torch.cat([bank.offsets[:1], torch.cumsum(lengths.repeat(reps), 0)])
    return dataclasses.replace(bank, names=list(bank.names) * reps, videos=list(bank.videos) * reps,
                               x={m: tile(t) for m, t in bank.x.items()},
                               valid={m: tile(t) for m, t in bank.valid.items()},
                               y=tile(bank.y), y_valid=tile(bank.y_valid), offsets=offsets,
                               _norm=dict(bank._norm))


def bank_bytes(bank: Any) -> int:
    ts = [*bank.x.values(), *bank.valid.values(), bank.y, bank.y_valid, bank.offsets]
    return int(sum(t.element_size() * t.numel() for t in ts))


def train_config(a: argparse.Namespace, sizes: Sizes, model: str, precision: str) -> Any:
    from avpipe.fusion.config import TrainConfig

    return TrainConfig(fusion=model, labels=f"{a.data}/labels", cache=f"{a.data}/cache", device=a.device,
                       amp=AMP_OF[precision], seed=0, batch_size=sizes.batch_size).resolved()


class TrainBench:
    """The loaded fraction (train and val banks on the device) and the tiled epoch bank."""

    def __init__(self, a: argparse.Namespace, sizes: Sizes, rep: Report) -> None:
        import torch

        from avpipe.fusion.models import get_model_class

        self.a, self.sizes, self.rep = a, sizes, rep
        self.device = torch.device(a.device)
        models = [m for m in a.models.split(",") if m]
        self.models = models
        self.mods = {m: tuple(get_model_class(m).required_modalities(train_config(a, sizes, m, "fp32").model))
                     for m in models}
        self.biggest = max(models, key=lambda m: len(self.mods[m]))
        self._loaded: dict[tuple[str, ...], tuple[Any, Any, Any, float]] = {}
        self._windows: dict[tuple[int, int, tuple[str, ...]], Any] = {}

    def loaded(self, model: str) -> tuple[Any, Any, Any, float]:
        """(tiled train bank, val bank, untiled train bank, load seconds) holding ``model``'s modalities."""
        from avpipe.fusion.data import InMemoryBanks
        from avpipe.fusion.source import CacheSource
        from avpipe.fusion.train import load_data

        need = self.mods[model]
        for have, got in self._loaded.items():
            if set(need) <= set(have):
                tiled, val, train, s = got
                return bank_subset(tiled, need), bank_subset(val, need), bank_subset(train, need), s
        who = self.biggest if set(need) <= set(self.mods[self.biggest]) else model
        cfg = train_config(self.a, self.sizes, who, "fp32")
        cfg.memory_budget_gb = None
        t = time.perf_counter()
        data = load_data(cfg, CacheSource(cfg.cache), self.device)
        sync(self.device)
        load_s = time.perf_counter() - t
        if not (isinstance(data.train, InMemoryBanks) and isinstance(data.val, InMemoryBanks)):
            raise RuntimeError("the fraction's banks did not fit the device in one piece")
        train, val = data.train.bank, data.val.bank
        tiled = tile_bank(train, self.sizes.epoch_frames)
        sync(self.device)
        self._loaded[tuple(self.mods[who])] = (tiled, val, train, load_s)
        self.rep.log(f"loaded {'+'.join(self.mods[who])}: train {train.n_rows:,} rows, val {val.n_rows:,}, "
                     f"tiled to {tiled.n_rows:,} rows ({bank_bytes(tiled) / 2**30:.2f} GiB) in {load_s:.1f}s")
        return self.loaded(model)

    def windows(self, bank: Any, cfg: Any) -> Any:
        """The training windows as the run's recipe enumerates them (every clip phase for jca, rja
        and dca; every hop frames otherwise)."""
        from avpipe.fusion.train import bank_windows

        key = (int(cfg.window), int(cfg.hop), int(cfg.clip_len), str(cfg.windows), tuple(bank.x))
        if key not in self._windows:
            self._windows[key] = bank_windows(cfg, bank.offsets, bank.y_valid)
        return self._windows[key]


def timed_steps(tb: TrainBench, model: str, precision: str, cap_s: float) -> tuple[dict[str, Any], Any]:
    """``--steps`` batches of the trainer's ``train_epoch`` after a warm-up; returns the row and
    the trained model (for the CCC on the validation split)."""
    import torch

    from avpipe.fusion.data import InMemoryBanks
    from avpipe.fusion.train import build_fit, make_schedule, seed_everything, steps_per_epoch, train_epoch

    sizes, dev = tb.sizes, tb.device
    cfg = train_config(tb.a, sizes, model, precision)
    tiled, _, _, _ = tb.loaded(model)
    w = tb.windows(tiled, cfg)
    n_win, B = len(w), int(cfg.batch_size)
    prov = InMemoryBanks(tiled)
    reset_peak(dev)
    resident = int(torch.cuda.memory_allocated(dev)) if dev.type == "cuda" else None
    seed_everything(0)
    fit = build_fit(cfg, tiled.dims, dev, 1)
    lrs = make_schedule(cfg, fit.opt, steps_per_epoch(cfg, n_win, 1))
    order = torch.randperm(n_win, generator=torch.Generator().manual_seed(0)).to(w.start.device)

    def take(first_batch: int, n_batches: int) -> Any:
        i = torch.arange(first_batch * B, (first_batch + n_batches) * B, device=order.device) % n_win
        return w.select(order[i])

    t = time.perf_counter()
    train_epoch(cfg, fit, prov, take(0, sizes.warmup), lrs, 0, dev, 0, 1)
    sync(dev)
    warm_s = time.perf_counter() - t
    steps, done, t0 = 0, 0, time.perf_counter()
    while steps < sizes.steps and time.perf_counter() - t0 < cap_s:
        k = min(5, sizes.steps - steps)
        sub = take(sizes.warmup + steps, k)
        train_epoch(cfg, fit, prov, sub, lrs, 0, dev, 0, 1)
        sync(dev)
        steps += k
        done += len(sub)
    el = time.perf_counter() - t0
    wps = done / el if el > 0 else float("nan")
    row = {"model": model, "precision": precision, "autocast": str(fit.amp[1]).replace("torch.", "")
           if fit.amp[0] else "off", "window": int(cfg.window), "hop": int(cfg.hop), "clip": int(cfg.clip_len),
           "batch": B, "warmup_s": warm_s, "steps": steps, "windows_timed": done, "seconds": el,
           "windows_s": wps, "step_ms": 1000 * el / max(steps, 1), "epoch_windows": n_win,
           "epoch_frames": tiled.n_rows, "train_epoch_s_projected": n_win / wps if wps else None,
           "peak_memory": peak_memory(dev), "resident_before": resident, "bank_bytes": bank_bytes(tiled),
           "all_steps": steps == sizes.steps}
    return row, fit


def val_ccc(tb: TrainBench, model: str, fit: Any, cfg: Any) -> tuple[float, float, int]:
    """(mean CCC on the fraction's validation split, seconds, val frames)."""
    from avpipe.fusion.data import InMemoryBanks
    from avpipe.fusion.inference import predict_provider
    from avpipe.fusion.metrics import evaluate

    _, val, _, _ = tb.loaded(model)
    t = time.perf_counter()
    preds, labels, valid = predict_provider(fit.model, InMemoryBanks(val), cfg.window, int(cfg.eval_hop),
                                            int(cfg.batch_size) * 2, fit.amp)
    s = time.perf_counter() - t
    return float(evaluate(preds, labels, valid, cfg.smoothing).overall["mean"]), s, val.n_rows


def full_epoch(tb: TrainBench, model: str, precision: str) -> dict[str, Any]:
    """One whole epoch of the tiled bank through the trainer's ``train_epoch``."""
    import torch

    from avpipe.fusion.data import InMemoryBanks
    from avpipe.fusion.train import build_fit, make_schedule, seed_everything, steps_per_epoch, train_epoch

    dev = tb.device
    cfg = train_config(tb.a, tb.sizes, model, precision)
    tiled, _, _, _ = tb.loaded(model)
    w = tb.windows(tiled, cfg)
    reset_peak(dev)
    seed_everything(0)
    fit = build_fit(cfg, tiled.dims, dev, 1)
    lrs = make_schedule(cfg, fit.opt, steps_per_epoch(cfg, len(w), 1))
    t = time.perf_counter()
    loss, nb, _ = train_epoch(cfg, fit, InMemoryBanks(tiled), w, lrs, 0, dev, 0, 1)
    sync(dev)
    s = time.perf_counter() - t
    ccc, val_s, val_rows = val_ccc(tb, model, fit, cfg)
    del fit
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    return {"model": model, "precision": precision, "train_epoch_s": s, "windows": len(w), "batches": nb,
            "windows_s": len(w) / s, "train_loss": loss / max(nb, 1), "val_ccc": ccc, "val_s": val_s,
            "val_frames": val_rows, "peak_memory": peak_memory(dev)}


def without_dropout(model: Any) -> Any:
    """``model`` in training mode with every dropout probability set to 0.

    Why not ``eval()``: cuDNN's LSTM has no backward in eval mode ("cudnn RNN backward can only be
    called in training mode"); and why no dropout: the CPU and the GPU draw different masks, so
    the losses would differ by design rather than by arithmetic."""
    from torch import nn

    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
        elif isinstance(m, (nn.MultiheadAttention, nn.RNNBase)):
            m.dropout = 0.0
    return model


def first_losses(tb: TrainBench, model: str) -> dict[str, Any]:
    """fp32 losses of the first steps on the device and on the CPU, same weights, same batches,
    dropout off (:func:`without_dropout`)."""
    import torch

    from avpipe.fusion.metrics import compute_loss
    from avpipe.fusion.train import build_fit
    from avpipe.fusion.windows import make_windows

    sizes = tb.sizes
    cfg = train_config(tb.a, sizes, model, "fp32")
    _, val, _, _ = tb.loaded(model)
    out: dict[str, list[float]] = {}
    for name, dev in (("device", tb.device), ("cpu", torch.device("cpu"))):
        bank = val if dev == tb.device else bank_to(val, dev)
        # hop windows: a numerics check of the first losses, on validation videos that may be
        # shorter than a window (the clip-phase enumeration keeps none of those)
        w = make_windows(bank.offsets, cfg.window, cfg.hop, bank.y_valid, require_labels=True)
        fit = build_fit(cfg, bank.dims, dev, 1)
        without_dropout(fit.model)
        losses = []
        for k in range(sizes.loss_steps):
            idx = torch.arange(k * sizes.loss_batch, (k + 1) * sizes.loss_batch, device=w.start.device) % len(w)
            b = bank.gather(w.select(idx), cfg.window)
            pred = fit.model(b.x, b.mask)
            loss = compute_loss(cfg.loss, pred.float(), b.y, b.y_mask, cfg.aux_losses or {})
            fit.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.grad_clip)
            fit.opt.step()
            losses.append(float(loss.detach()))
        out[name] = losses
        del fit
    diff = [abs(x - y) for x, y in zip(out["device"], out["cpu"])]
    rel = max(d / max(abs(y), 1e-12) for d, y in zip(diff, out["cpu"]))
    return {"model": model, "device_losses": out["device"], "cpu_losses": out["cpu"], "max_abs_diff": max(diff),
            "max_rel_diff": rel, "rtol": LOSS_RTOL, "ok": rel <= LOSS_RTOL}


def part_train(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import torch

    res = rep.part("train")
    res.update(rows=[], full_epochs=[], first_losses=[], skipped=[], errors=[])
    tb = TrainBench(a, sizes, rep)
    tiled, val, train, load_s = tb.loaded(tb.biggest)
    res.update(load_s=load_s, train_frames=train.n_rows, val_frames=val.n_rows, epoch_frames=tiled.n_rows,
               bank_bytes=bank_bytes(tiled), epoch_goal_s=EPOCH_GOAL_S,
               projection="epoch seconds = the epoch's train windows / windows/s of the timed steps")
    rep.save()
    until = a.train_until
    # correctness first (cheap): the first fp32 losses on the device against the CPU's
    for model in tb.models:
        if budget.left(until) < 5:
            res["skipped"].append(f"first losses {model}: budget")
            continue
        try:
            res["first_losses"].append(first_losses(tb, model))
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"first losses {model}: {type(e).__name__}: {e}")
        rep.save()
    for model in tb.models:
        for prec in a.precisions.split(","):
            if prec == "fp16" and tb.device.type != "cuda":
                res["skipped"].append(f"{model} fp16: fp16 autocast is CUDA-only (on {tb.device.type} the trainer "
                                      f"runs fp32, already timed)")
                continue
            left = budget.left(until)
            if left < 5:
                res["skipped"].append(f"{model} {prec}: budget")
                continue
            try:
                row, fit = timed_steps(tb, model, prec, min(sizes.step_cap_s, left / 2))
                cfg = train_config(a, sizes, model, prec)
                row["val_ccc"], row["val_s"], row["val_frames"] = val_ccc(tb, model, fit, cfg)
                del fit
            except Exception as e:  # noqa: BLE001 - recorded; the other rows still run
                res["errors"].append(f"{model} {prec}: {type(e).__name__}: {e}")
                rep.log(f"{model} {prec} failed: {traceback.format_exc(limit=6)}")
                rep.save()
                continue
            finally:
                if tb.device.type == "cuda":
                    torch.cuda.empty_cache()
            ref = next((r for r in res["rows"] if r["model"] == model and r["precision"] == "fp32"), None)
            if ref is not None and prec != "fp32":
                row["fp32_speedup"] = row["windows_s"] / ref["windows_s"]
                row["ccc_delta_vs_fp32"] = row["val_ccc"] - ref["val_ccc"]
                row["ccc_ok"] = abs(row["ccc_delta_vs_fp32"]) <= CCC_TOL and row["all_steps"] and ref["all_steps"]
            res["rows"].append(row)
            rep.log(f"{model:6s} {prec}: {row['windows_s']:.1f} windows/s, epoch ≈ "
                    f"{row['train_epoch_s_projected']:.1f}s ({row['epoch_windows']:,} windows), "
                    f"val CCC {row['val_ccc']:.3f}, peak {((row['peak_memory'] or 0) / 2**30):.2f} GiB")
            rep.save()
        if model == "jca" and sizes.full_epoch:
            best = min((r for r in res["rows"] if r["model"] == "jca"), key=lambda r: r["train_epoch_s_projected"],
                       default=None)
            for prec in dict.fromkeys(["fp32"] + ([best["precision"]] if best else [])):
                est = next((r["train_epoch_s_projected"] for r in res["rows"]
                            if r["model"] == "jca" and r["precision"] == prec), None)
                if est is None or est * 1.3 + 5 > budget.left(until) / 2:
                    res["skipped"].append(f"jca whole epoch {prec}: projected {est}s does not fit the budget")
                    continue
                try:
                    res["full_epochs"].append(full_epoch(tb, "jca", prec))
                    rep.log(f"jca whole epoch {prec}: {res['full_epochs'][-1]['train_epoch_s']:.1f}s")
                except Exception as e:  # noqa: BLE001
                    res["errors"].append(f"jca whole epoch {prec}: {type(e).__name__}: {e}")
                rep.save()
    res["status"] = "done" if not res["errors"] else "errors"
    return res
