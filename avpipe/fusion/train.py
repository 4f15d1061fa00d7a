"""Training loop: data once in memory, windows by index, CCC loss, checkpoints that survive SIGKILL.

Reproducibility and resume: the window order of epoch *e* depends only on (seed, e); the model,
optimiser, LR-controller state, early-stopping counters, history and the torch RNG state are
checkpointed atomically at the end of every epoch. A run killed at any point and resumed with
``--resume`` restarts from the last completed epoch and ends with the same metrics as an
uninterrupted run (CPU; on GPU up to non-deterministic kernels).

Multi-GPU: launched with ``torchrun`` (env ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) the model is
wrapped in DDP (NCCL on CUDA, gloo on CPU); every rank holds the bank and takes an interleaved slice
of each epoch's window permutation; every rank evaluates the full validation set on identical
weights (no communication, identical early-stopping decisions); only rank 0 writes the run folder.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import (ChunkedBanks, InMemoryBanks, Stats, TrackRef, compute_stats,
                                make_provider)
from avpipe.fusion.labels import LabelError, assign_splits, load_labels, match_videos
from avpipe.fusion.metrics import EvalResult, compute_loss, evaluate
from avpipe.fusion.models import MissingModalityError, create_model, get_model_class
from avpipe.fusion.run import RunDir
from avpipe.fusion.source import FeatureError, FeatureSet, FeatureSource
from avpipe.fusion.windows import batches, make_windows


# ----------------------------------------------------------------------------- setup
def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            lr = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device(f"cuda:{lr}")
        return torch.device("cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


@dataclass
class Prepared:
    train: list[TrackRef]
    val: list[TrackRef]
    fps: dict[str, tuple[str, str]]  # modality -> (stage, fingerprint)
    modalities: tuple[str, ...]


def open_source(cfg: TrainConfig) -> FeatureSource:
    from avpipe.fusion.source import CacheSource

    return CacheSource(cfg.cache)


def prepare(cfg: TrainConfig, source: FeatureSource) -> Prepared:
    """Labels → splits → cached videos → one fingerprint per modality (recorded in ``cfg``)."""
    cls = get_model_class(cfg.fusion)
    mods = cls.required_modalities(cfg.model)
    fset = FeatureSet.parse(cfg.features or None, mods).subset(mods)
    tracks = assign_splits(load_labels(cfg.labels), cfg.split_file, cfg.val_fraction, cfg.seed)
    keymap = match_videos(tracks, [k for k, _ in source.videos()])
    unmatched = [t.name for t in tracks if t.name not in keymap and t.split in ("train", "val")]
    if unmatched:
        warnings.warn(f"{len(unmatched)} label track(s) have no video in the cache and are skipped "
                      f"(e.g. {unmatched[:3]})", stacklevel=2)
    refs = [TrackRef(t.name, keymap[t.name], t) for t in tracks if t.name in keymap]
    train = [r for r in refs if r.labels.split == "train"]
    val = [r for r in refs if r.labels.split == "val"]
    if not train or not val:
        raise LabelError(f"need labelled videos in both train and val splits; got {len(train)} train, "
                         f"{len(val)} val (matched {len(refs)} of {len(tracks)} label tracks to cached videos)")
    videos = sorted({r.video for r in train + val})
    fps: dict[str, tuple[str, str]] = {}
    for m in mods:
        ref = fset.refs[m]
        try:
            fps[m] = (ref.stage, source.resolve(ref, videos))
        except FeatureError as e:
            raise MissingModalityError(
                f"model {cfg.fusion!r} needs modality {m!r} (stage {ref.stage!r}); run: avpipe extract "
                f"--stages {ref.stage} --videos DIR --cache {cfg.cache}  [{e}]") from e
    cfg.features = fset.to_dict()
    cfg.resolved_features = {m: {"stage": s, "fingerprint": f} for m, (s, f) in fps.items()}
    return Prepared(train, val, fps, mods)


# ----------------------------------------------------------------------------- LR control
class LRController:
    """The schedules of docs/models.md#training-defaults as one small state machine (JSON-able state).

    * ``step`` — lr for epochs ≤ step_start, then × step_gamma every step_every epochs (the
      Praveen code's hard-coded schedule: 1e-3, ×0.8 / 2 epochs after epoch 5);
    * ``plateau`` — × plateau_factor after plateau_patience epochs without validation-CCC gain;
    * ``warmup_plateau`` — linear per-batch warm-up over warmup_epochs, then plateau (RJCMA);
    * ``none`` — constant.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.base = float(cfg.lr)
        self.steps = max(1, steps_per_epoch)
        self.state = {"lr": self.base, "best": -math.inf, "bad": 0}
        if cfg.schedule not in ("step", "plateau", "warmup_plateau", "none"):
            raise ValueError(f"unknown schedule {cfg.schedule!r}")

    def lr_at(self, epoch: int, step: int) -> float:
        c = self.cfg
        if c.schedule == "step":
            k = max(0, math.ceil((epoch - c.step_start) / c.step_every)) if epoch > c.step_start else 0
            return self.base * c.step_gamma ** k
        if c.schedule == "warmup_plateau" and epoch < (c.warmup_epochs or 0):
            return self.base * (epoch * self.steps + step + 1) / ((c.warmup_epochs or 1) * self.steps)
        return self.state["lr"] if c.schedule != "none" else self.base

    def end_epoch(self, val_score: float) -> None:
        c = self.cfg
        if c.schedule not in ("plateau", "warmup_plateau"):
            return
        if val_score > self.state["best"] + 1e-4:
            self.state["best"], self.state["bad"] = float(val_score), 0
        else:
            self.state["bad"] += 1
            if self.state["bad"] > c.plateau_patience:
                self.state["lr"] = max(c.min_lr, self.state["lr"] * c.plateau_factor)
                self.state["bad"] = 0


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam or adamw")


def amp_settings(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    if device.type != "cuda" or cfg.amp == "off":
        return False, torch.float32
    if cfg.amp == "bf16":
        return True, torch.bfloat16
    return True, torch.float16


# ----------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_provider(model: torch.nn.Module, provider: InMemoryBanks | ChunkedBanks, window: int, hop: int,
                     batch_size: int, amp: tuple[bool, torch.dtype] = (False, torch.float32)
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-track predictions (overlapping windows averaged per frame), labels and label masks."""
    was = model.training
    model.eval()
    preds, labels, valid = {}, {}, {}
    for bank in provider.groups(0, None):
        w = make_windows(bank.offsets, window, hop)
        acc = torch.zeros(bank.n_rows, 2, device=bank.device)
        cnt = torch.zeros(bank.n_rows, device=bank.device)
        for idx in batches(len(w), batch_size, seed=None, device=bank.device):
            b = bank.gather(w.select(idx), window)
            with torch.autocast(bank.device.type, dtype=amp[1], enabled=amp[0]):
                p = model(b.x, b.mask)
            r = b.rows[b.inwin]
            acc.index_put_((r,), p.float()[b.inwin], accumulate=True)
            cnt.index_put_((r,), torch.ones_like(r, dtype=cnt.dtype), accumulate=True)
        out = (acc / cnt.clamp_min(1).unsqueeze(1)).cpu().numpy()
        y, yv = bank.y.cpu().numpy(), bank.y_valid.cpu().numpy()
        for i, name in enumerate(bank.names):
            s = bank.track_slice(i)
            preds[name], labels[name], valid[name] = out[s], y[s], yv[s]
    model.train(was)
    return preds, labels, valid


# ----------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> tuple[int, int]:
    rank, world = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    return rank, world


# ----------------------------------------------------------------------------- training
def _checkpoint_state(model, opt, scaler, lrc: LRController, epoch: int, best: dict[str, Any],
                      bad: int, history: list[dict[str, Any]], cfg: TrainConfig, stats: Stats,
                      dims: Mapping[str, int]) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "lr_state": dict(lrc.state), "epoch": epoch, "best": dict(best), "bad_epochs": bad,
            "history": list(history), "rng": rng, "config": cfg.to_dict(), "stats": stats.to_dict(),
            "dims": dict(dims), "fusion": cfg.fusion, "window": cfg.window, "model_options": dict(cfg.model)}


def build_model_from_checkpoint(ck: Mapping[str, Any], device: torch.device | str = "cpu") -> torch.nn.Module:
    model = create_model(ck["fusion"], ck["dims"], ck["window"], **ck["model_options"])
    model.load_state_dict(ck["model"])
    return model.to(device).eval()


def train(cfg: TrainConfig, *, source: FeatureSource | None = None, resume: bool = False,
          log: Callable[[str], None] = print, max_epochs_this_call: int | None = None) -> dict[str, Any]:
    """Train ``cfg.fusion``; returns the final summary (best epoch, best validation metrics).

    ``max_epochs_this_call`` stops after that many epochs (tests of resume).
    """
    run = RunDir(cfg.out)
    if resume and run.last.is_file():
        saved = TrainConfig.load(run.config)
        if cfg.epochs is not None:
            saved.epochs = cfg.epochs
        cfg = saved
    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    main_proc = rank == 0
    from avpipe.pipeline.threads import default_num_threads

    torch.set_num_threads(cfg.num_threads or default_num_threads())  # not every core when some are taken
    seed_everything(cfg.seed)
    source = source if source is not None else open_source(cfg)
    prep = prepare(cfg, source)
    budget = int(cfg.memory_budget_gb * (1 << 30)) if cfg.memory_budget_gb else None
    t0 = time.perf_counter()
    tr = make_provider(source, prep.fps, prep.train, device=device, dtype=cfg.feature_dtype,
                       tolerance=cfg.label_tolerance, budget_bytes=budget)
    va = make_provider(source, prep.fps, prep.val, device=device, dtype=cfg.feature_dtype,
                       tolerance=cfg.label_tolerance, budget_bytes=budget)
    stats = compute_stats(tr.groups(0, None))
    for p in (tr, va):
        (p.bank.set_stats if isinstance(p, InMemoryBanks) else p.set_stats)(stats)
    load_s = time.perf_counter() - t0
    if main_proc:
        run.create()
        cfg.save(run.config)
        log(f"[{cfg.fusion}] {len(prep.train)} train / {len(prep.val)} val tracks; features "
            + ", ".join(f"{m}={s}@{f[:12]}" for m, (s, f) in prep.fps.items())
            + f"; loaded in {load_s:.1f}s ({'chunked' if tr.chunked else 'in memory'}, {device})")
    dims = tr.dims
    seed_everything(cfg.seed)
    model = create_model(cfg.fusion, dims, cfg.window, **cfg.model).to(device)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(cfg, model.parameters())
    amp = amp_settings(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp[0] and amp[1] == torch.float16 else None
    # steps per epoch (for warm-up): windows per rank / batch
    if isinstance(tr, InMemoryBanks):
        train_windows = [make_windows(tr.bank.offsets, cfg.window, cfg.hop, tr.bank.y_valid, require_labels=True)]
        n_windows = len(train_windows[0])
    else:
        train_windows, n_windows = None, 0
        for b in tr.groups(0, None):
            n_windows += len(make_windows(b.offsets, cfg.window, cfg.hop, b.y_valid, require_labels=True))
    lrc = LRController(cfg, math.ceil(n_windows / world / cfg.batch_size))
    start_epoch, best, bad, history = 0, {"score": -math.inf, "epoch": -1}, 0, []
    if resume and run.last.is_file():
        ck = run.load_checkpoint("last", map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        lrc.state = dict(ck["lr_state"])
        start_epoch, best, bad, history = ck["epoch"] + 1, dict(ck["best"]), int(ck["bad_epochs"]), list(ck["history"])
        torch.set_rng_state(ck["rng"]["torch"].cpu())
        if "cuda" in ck["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng"]["cuda"]])
        if main_proc:
            log(f"resumed from epoch {ck['epoch']} (best {best['score']:.4f} at epoch {best['epoch']})")
    tb = _tensorboard(run) if main_proc else None
    aux = cfg.aux_losses or {}
    done_this_call = 0
    for epoch in range(start_epoch, int(cfg.epochs)):
        if bad >= cfg.patience:
            break
        te = time.perf_counter()
        model.train()
        tot, nb, step = 0.0, 0, 0
        for gi, bank in enumerate(tr.groups(epoch, cfg.seed)):
            w = train_windows[0] if train_windows is not None else \
                make_windows(bank.offsets, cfg.window, cfg.hop, bank.y_valid, require_labels=True)
            for idx in batches(len(w), int(cfg.batch_size), seed=cfg.seed, epoch=epoch * 7919 + gi,
                               rank=rank, world=world, device=device):
                lr = lrc.lr_at(epoch, step)
                for g in opt.param_groups:
                    g["lr"] = lr
                b = bank.gather(w.select(idx), cfg.window)
                with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                    pred = ddp_model(b.x, b.mask)
                loss = compute_loss(cfg.loss, pred.float(), b.y, b.y_mask, aux)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                tot += float(loss.detach())
                nb += 1
                step += 1
        train_s = time.perf_counter() - te
        preds, labels, valid = predict_provider(model, va, cfg.window, int(cfg.eval_hop), int(cfg.batch_size) * 2, amp)
        ev = evaluate(preds, labels, valid, cfg.smoothing)
        score = ev.overall["mean"]
        if not math.isfinite(score):
            score = -1.0
        lrc.end_epoch(score)
        row = {"epoch": epoch, "lr": lr if nb else lrc.lr_at(epoch, 0), "train_loss": tot / max(nb, 1),
               "val_ccc_valence": ev.overall["valence"], "val_ccc_arousal": ev.overall["arousal"],
               "val_ccc_mean": ev.overall["mean"], "train_s": round(train_s, 3),
               "epoch_s": round(time.perf_counter() - te, 3), "windows": n_windows}
        if ev.overall_smoothed:
            row.update({f"val_ccc_{k}_smoothed": v for k, v in ev.overall_smoothed.items()})
        history.append(row)
        improved = score > best["score"]
        if improved:
            best, bad = {"score": float(score), "epoch": epoch, **{k: float(v) for k, v in row.items()
                                                                   if k.startswith("val_")}}, 0
        else:
            bad += 1
        if main_proc:
            state = _checkpoint_state(model, opt, scaler, lrc, epoch, best, bad, history, cfg, stats, dims)
            if improved:
                run.save_checkpoint(state, "best")
            run.save_checkpoint(state, "last")
            run.write_metrics(history)
            if tb is not None:
                for k, v in row.items():
                    tb.add_scalar(k, v, epoch)
            log(f"epoch {epoch:3d} lr {row['lr']:.2e} loss {row['train_loss']:.4f} val CCC "
                f"V {row['val_ccc_valence']:.4f} A {row['val_ccc_arousal']:.4f} mean {row['val_ccc_mean']:.4f}"
                f"{' *' if improved else ''} ({row['epoch_s']:.1f}s)")
        done_this_call += 1
        if max_epochs_this_call is not None and done_this_call >= max_epochs_this_call:
            break
    summary = {"fusion": cfg.fusion, "best_epoch": best["epoch"], "best": best, "epochs_run": len(history),
               "run": str(run.path), "load_s": load_s}
    if main_proc:
        finish(run, cfg, va, device)
        run.write_json("summary.json", summary)
    if tb is not None:
        tb.close()
    return summary


def finish(run: RunDir, cfg: TrainConfig, va, device: torch.device) -> EvalResult | None:
    """Best model's validation predictions + plots (rank 0, end of training)."""
    if not run.best.is_file():
        return None
    ck = run.load_checkpoint("best", map_location=device)
    model = build_model_from_checkpoint(ck, device)
    preds, labels, valid = predict_provider(model, va, cfg.window, int(cfg.eval_hop), int(cfg.batch_size) * 2)
    ev = evaluate(preds, labels, valid, cfg.smoothing)
    from avpipe.fusion.predict import write_prediction

    out = run.predictions / "val"
    for name, p in preds.items():
        write_prediction(out / f"{_safe(name)}.csv", p, "csv")
    run.write_json("eval/val_best.json", {"overall": ev.overall, "overall_smoothed": ev.overall_smoothed,
                                          "per_video": ev.per_video, "n_frames": ev.n_frames})
    with contextlib.suppress(Exception):
        from avpipe.fusion.plots import plot_learning_curves, plot_predictions

        plot_learning_curves(run.read_metrics(), run.plots / "learning_curves.png")
        plot_predictions(preds, labels, valid, run.plots / "val_predictions.png", n=cfg.plot_videos)
    return ev


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _tensorboard(run: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    try:
        return SummaryWriter(str(run.path / "tensorboard"))
    except Exception:  # pragma: no cover
        return None


def load_run(path: str | Path) -> tuple[RunDir, TrainConfig]:
    run = RunDir(path)
    if not run.exists():
        raise FileNotFoundError(f"not a run folder (no config.json): {path}")
    return run, TrainConfig.load(run.config)
