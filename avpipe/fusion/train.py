"""Training loop: data once in memory, windows by index, CCC loss, checkpoints that survive SIGKILL.

Reproducibility and resume: the window order of epoch *e* depends only on (seed, e); the model,
optimiser, LR-schedule state, early-stopping counters, history and the torch RNG state are
checkpointed atomically at the end of every epoch. A run killed at any point and resumed with
``--resume`` restarts from the last completed epoch and ends with the same metrics as an
uninterrupted run (CPU; on GPU up to non-deterministic kernels).

Runs are never lost: an existing run folder is refused unless resumed (same model and features)
or explicitly overwritten (:meth:`avpipe.fusion.run.RunDir.claim`), and the run records absolute
cache and label paths so ``evaluate``/``predict`` work from any directory.

Multi-GPU: launched with ``torchrun`` (env ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) the model is
wrapped in DDP (NCCL on CUDA, gloo on CPU); every rank holds the bank. ``batch_size`` is the
*global* batch: each step's batch is the one-process run's, split evenly across the ranks
(:func:`avpipe.fusion.windows.batches`), each rank's loss weighted by its share of the labelled
frames (:func:`rank_weight`), and the learning rate is not scaled — the same experiment at any
world size. ``config.json`` records ``distributed`` (world size, global and per-rank batch);
a resume at another world size keeps the global batch (refused when it cannot be split evenly).
Every rank evaluates the full validation set on identical weights (no communication, identical
early-stopping decisions); only rank 0 writes the run folder and prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avpipe.fusion.config import DISTRIBUTED, TrainConfig, saved_distributed
from avpipe.fusion.data import ChunkedBanks, InMemoryBanks, Stats, compute_stats
from avpipe.fusion.guards import check_epoch
from avpipe.fusion.inference import build_model_from_checkpoint, predict_provider, resolve_device, write_prediction
from avpipe.fusion.metrics import EvalResult, compute_loss, evaluate
from avpipe.fusion.models import create_model
from avpipe.fusion.prepare import Prepared, open_source, prepare
from avpipe.fusion.recipe_schedule import RECIPE_SCHEDULES, RecipeSchedule
from avpipe.fusion.recipes import apply_init, recipe_stats, selection_score
from avpipe.fusion.run import RUN_RECORD, RunConflictError, RunDir
from avpipe.fusion.runlog import RunLog
from avpipe.fusion.schedule import LRSchedule
from avpipe.fusion.segments import SegmentPlan, legacy_fusion, plan_for
from avpipe.fusion.source import FeatureSource
from avpipe.fusion.windows import Windows, batches, clip_phase_windows, make_windows
from avpipe.pipeline.config_schema import save_config_file

Provider = InMemoryBanks | ChunkedBanks


# ----------------------------------------------------------------------------- setup
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The config with its cache, labels, split-file and run-folder paths made absolute (``~`` expanded).

    Why: the run folder records them, and ``evaluate RUN`` / ``predict --run RUN`` are often run
    from another directory than ``train`` was."""
    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().absolute()) if p else p

    return dataclasses.replace(cfg, cache=absolute(cfg.cache) or cfg.cache, labels=absolute(cfg.labels) or "",
                               split_file=absolute(cfg.split_file), out=absolute(cfg.out) or cfg.out)


# ----------------------------------------------------------------------------- optimisation
def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam or adamw")


def amp_settings(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    """Autocast: fp16 on CUDA by default; bf16 when asked, on CUDA or on CPU (where AVX512-BF16/AMX
    make the recursive models faster; without them it is emulated: correct, not faster)."""
    if cfg.precision == "bf16" and device.type in ("cuda", "cpu"):
        return True, torch.bfloat16
    if device.type != "cuda" or cfg.precision == "off":
        return False, torch.float32
    return True, torch.float16


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


# ----------------------------------------------------------------------------- training steps
@dataclass
class LoadedSplits:
    """Both splits' features, loaded (in memory or in chunks) and normalised with the training
    split's statistics, with the preparation they came from and the seconds loading took."""

    prep: Prepared
    train: Provider
    val: Provider
    stats: Stats
    load_s: float


@dataclass
class ModelAndOptimiser:
    """What each step works on: the model, its DDP wrapper (the model itself on one process),
    the optimiser, the autocast setting (enabled, dtype) and the fp16 grad scaler (or None)."""

    model: torch.nn.Module
    ddp_model: torch.nn.Module
    opt: torch.optim.Optimizer
    amp: tuple[bool, torch.dtype]
    scaler: Any  # torch.amp.GradScaler | None


@dataclass
class EarlyStopping:
    """The early-stopping state carried from epoch to epoch and through checkpoints: the next
    epoch to run, the best epoch so far, epochs since it improved, and every epoch's metrics row."""

    start_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": -1})
    bad: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, epoch: int, row: dict[str, Any], score: float) -> bool:
        """Append the epoch's row; True when it is the new best."""
        self.history.append(row)
        if score > self.best["score"]:
            self.best = {"score": float(score), "epoch": epoch,
                         **{k: float(v) for k, v in row.items() if k.startswith("val_")}}
            self.bad = 0
            return True
        self.bad += 1
        return False


def claim_run(cfg: TrainConfig, *, resume: bool, overwrite: bool, check: bool = True) -> TrainConfig:
    """The config to train with: the run's own when resuming its checkpoint, else ``cfg``.

    ``check`` (rank 0) refuses an existing run folder unless ``resume`` (with the run's model and
    features) or ``overwrite`` (which deletes the old run's files), before any data is loaded."""
    run = RunDir(cfg.out)
    if check:
        run.claim(resume=resume, overwrite=overwrite)
    if not (resume and run.config.is_file()):
        return cfg
    saved = TrainConfig.load_run_config(run.config)
    if check:
        _refuse_legacy_maven(run, cfg)
        run.check_resume(saved.to_dict(), cfg.to_dict())
        if cfg.recipe and cfg.recipe != saved.recipe:
            raise RunConflictError(
                f"--resume {str(run.path)!r}: --recipe {cfg.recipe} but the run trains with recipe {saved.recipe}"
                + (" (it was trained before recipes existed, with what is now recipe avpipe)"
                   if saved.recipe == "avpipe" and saved.fusion in _published() else "")
                + "; resume with the run's recipe, or train into another --out")
    if not run.last.is_file():
        return cfg  # killed before the first epoch ended: start again with the same settings
    if cfg.epochs is not None:
        saved.epochs = cfg.epochs
    # The folder given (--out) is the run, never the one its config.json names: a copied run
    # (cp -r runs/jca runs/jca2) or one moved elsewhere must not write into the original.
    saved.out = cfg.out
    return saved


def _refuse_legacy_maven(run: RunDir, cfg: TrainConfig) -> None:
    """``--fusion maven --resume`` of a run trained as ``maven`` before segment tokens: that run
    trained the per-frame front end (now ``maven-frames``), so it cannot continue as ``maven``."""
    try:
        raw = json.loads(run.config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if cfg.fusion == "maven" and isinstance(raw, dict) and legacy_fusion(raw):
        raise RunConflictError(
            f"--resume {str(run.path)!r}: this run was trained as 'maven' before maven became the authors' "
            "segment-token model (one audio and one text token per transcript segment); it trained avpipe's "
            "per-frame front end, now named maven-frames: resume it with --fusion maven-frames, or train "
            "maven into another --out")


def load_data(cfg: TrainConfig, source: FeatureSource, device: torch.device, bank: Any = None) -> LoadedSplits:
    """Labels and features of both splits, normalised with the training split's statistics
    (or handed out, already normalised, by a sweep's shared ``bank``)."""
    prep = prepare(cfg, source)
    budget = int(cfg.memory_budget_gb * (1 << 30)) if cfg.memory_budget_gb else None
    t0 = time.perf_counter()
    if cfg.input_norm not in (None, "zscore"):
        bank = None  # a sweep's shared banks are z-scored
    shared = bank.providers(source, prep, cfg, device) if bank is not None else None
    if shared is not None:
        tr, va, stats = shared
        return LoadedSplits(prep, tr, va, stats, time.perf_counter() - t0)
    from avpipe.data import load_windows  # the public data API's loader: one data path

    tr, va = (load_windows(source, prep.fingerprints, refs, device=device, dtype=cfg.feature_dtype,
                           tolerance=cfg.label_tolerance, budget_bytes=budget) for refs in (prep.train, prep.val))
    stats = recipe_stats(cfg.input_norm or "zscore", compute_stats(tr.groups(0, None)))
    for p in (tr, va):
        (p.bank.set_stats if isinstance(p, InMemoryBanks) else p.set_stats)(stats)
    return LoadedSplits(prep, tr, va, stats, time.perf_counter() - t0)


def build_fit(cfg: TrainConfig, dims: Mapping[str, int], device: torch.device, world: int) -> ModelAndOptimiser:
    """Model (seeded, so every rank starts from the same weights), DDP wrapper, optimiser, AMP."""
    seed_everything(cfg.seed)
    model = apply_init(create_model(cfg.fusion, dims, cfg.window, **cfg.model), cfg.init or "avpipe").to(device)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = amp_settings(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp[0] and amp[1] == torch.float16 else None
    return ModelAndOptimiser(model, ddp_model, make_optimizer(cfg, model.parameters()), amp, scaler)


def bank_windows(cfg: TrainConfig, offsets: torch.Tensor, y_valid: torch.Tensor, plan: SegmentPlan | None = None,
                 bank: Any = None) -> Windows:
    """One bank's training windows under the run's enumeration: ``hop`` (windows every hop frames
    with at least one labelled frame) or ``clip_phases`` (the JCA/RJA/DCA code's: every clip phase,
    kept when every clip holds a labelled frame); with a segment ``plan`` (maven), the transcript
    segments of ``bank``, cut into pieces of at most ``window`` frames every ``hop``."""
    if plan is not None:
        return plan.windows(bank, cfg.window, cfg.hop, require_labels=True)
    if cfg.windows == "clip_phases":
        return clip_phase_windows(offsets, cfg.window, int(cfg.clip_len), y_valid)
    return make_windows(offsets, cfg.window, cfg.hop, y_valid, require_labels=True)


def training_windows(cfg: TrainConfig, tr: Provider, plan: SegmentPlan | None = None) -> tuple[Windows | None, int]:
    """The training windows (kept when the split is one bank) and their total count."""
    if isinstance(tr, InMemoryBanks):
        w = bank_windows(cfg, tr.bank.offsets, tr.bank.y_valid, plan, tr.bank)
        return w, len(w)
    n = sum(len(bank_windows(cfg, b.offsets, b.y_valid, plan, b)) for b in tr.groups(0, None))
    return None, n


def steps_per_epoch(cfg: TrainConfig, n_windows: int, world: int) -> int:
    """Optimiser steps per epoch (the warm-up schedules count them): one per global batch, the
    same on every rank and — but for a last batch smaller than the world size — at any world size."""
    from avpipe.fusion.windows import n_batches

    return n_batches(n_windows, int(cfg.batch_size), world, bool(cfg.drop_last))


def distributed_record(cfg: TrainConfig, world: int) -> dict[str, int]:
    """What ``config.json`` records under ``distributed``: ``--batch-size`` is the global batch,
    split evenly across the ranks; the learning rate is not scaled (the same experiment at any
    world size)."""
    return {"world_size": int(world), "batch_size_global": int(cfg.batch_size),
            "batch_size_per_rank": int(cfg.batch_size) // max(1, int(world))}


def check_world(cfg: TrainConfig, world: int, saved: Mapping[str, Any] | None = None) -> None:
    """Refuse a global batch the ranks cannot share evenly (a usage error, before any data is
    loaded). ``saved``: the run's recorded ``distributed`` block when resuming — another world
    size is accepted because the global batch, and so the experiment, stays the same."""
    if world > 1 and int(cfg.batch_size) % world:
        what = (f"the run's global batch {cfg.batch_size} (recorded at world size "
                f"{saved.get('world_size')})" if saved else f"--batch-size {cfg.batch_size} (the global batch)")
        raise RunConflictError(f"{what} cannot be split evenly across {world} ranks; use a multiple of {world}"
                               + (" or resume with a world size that divides it" if saved else ""))


def make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, steps: int) -> LRSchedule | RecipeSchedule:
    return RecipeSchedule(cfg, opt, steps) if cfg.schedule in RECIPE_SCHEDULES else LRSchedule(cfg, opt, steps)


def _published() -> tuple[str, ...]:
    from avpipe.fusion.recipes import RECIPES

    return tuple(RECIPES)


def restore(run: RunDir, fit: ModelAndOptimiser, lrs: LRSchedule | RecipeSchedule, device: torch.device) -> EarlyStopping:
    """Model, optimiser, scaler, LR state, RNG and early-stopping state from the last checkpoint."""
    ck = run.load_checkpoint("last", map_location=device)
    fit.model.load_state_dict(ck["model"])
    fit.opt.load_state_dict(ck["optimizer"])
    if fit.scaler is not None and ck.get("scaler"):
        fit.scaler.load_state_dict(ck["scaler"])
    lrs.load_state_dict(ck["lr_state"])
    torch.set_rng_state(ck["rng"]["torch"].cpu())
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng"]["cuda"]])
    return EarlyStopping(ck["epoch"] + 1, dict(ck["best"]), int(ck["bad_epochs"]), list(ck["history"]))


def train_epoch(cfg: TrainConfig, fit: ModelAndOptimiser, tr: Provider, windows: Windows | None,
                lrs: LRSchedule | RecipeSchedule, epoch: int, device: torch.device, rank: int, world: int,
                plan: SegmentPlan | None = None) -> tuple[float, int, float]:
    """One pass over the training windows; returns (summed loss, batches, last lr used). With a
    segment ``plan`` a batch is as long as its longest segment piece, not ``window`` frames.

    Batch order follows ``cfg.shuffle``: ``epoch`` reshuffles every epoch (chunked groups too),
    ``once`` repeats one seeded permutation, ``none`` keeps the enumeration order."""
    fit.model.train()
    aux = cfg.aux_losses or {}
    shuffle = cfg.shuffle or "epoch"
    lrs.start_epoch(epoch)
    tot, nb, lr = 0.0, 0, lrs.lr
    groups = tr.groups(epoch, cfg.seed) if shuffle == "epoch" else tr.groups(0, cfg.seed if shuffle == "once" else None)
    for gi, bank in enumerate(groups):
        w = windows if windows is not None else bank_windows(cfg, bank.offsets, bank.y_valid, plan, bank)
        for idx in batches(len(w), int(cfg.batch_size), seed=cfg.seed,
                           epoch=(epoch * 7919 if shuffle == "epoch" else 0) + gi,
                           rank=rank, world=world, device=device, shuffle=shuffle, drop_last=bool(cfg.drop_last)):
            lrs.before_batch(epoch, nb)
            lr = lrs.lr
            sel = w.select(idx)
            b = bank.gather(sel, cfg.window if plan is None else int(sel.length.max()))
            with torch.autocast(device.type, dtype=fit.amp[1], enabled=fit.amp[0]):
                pred = fit.ddp_model(b.x, b.mask)
            loss = compute_loss(cfg.loss, pred.float(), b.y, b.y_mask, aux)
            if world > 1 and torch.distributed.is_initialized():
                loss = loss * rank_weight(cfg.loss, b.y_mask, world)
            _optimiser_step(cfg, fit, loss)
            lrs.after_batch()
            tot += float(loss.detach())
            nb += 1
    if world > 1 and torch.distributed.is_initialized():  # the epoch's loss over all ranks' windows
        t = torch.tensor([tot], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        tot = float(t.item()) / world
    return tot, nb, lr


def rank_weight(loss: str, y_mask: torch.Tensor, world: int) -> torch.Tensor:
    """This rank's share of the global batch, times ``world``, to multiply its loss by.

    Why: each rank's loss is a mean over *its* labelled frames, and DDP averages the ranks'
    gradients with equal weights; when the ranks hold different numbers of labelled frames the
    step is not the one-process step (1 vs 2 ranks differed by up to 2e-2 per epoch). With the
    frame counts all-reduced, ``mean_r · n_r · world / N`` makes DDP's average exactly the
    one-process masked mean (``mse``; ``ccc_window`` is a mean over windows with two labelled
    frames, so those are counted). ``ccc`` over the batch is not a mean of per-frame terms: the
    frame weighting only brings it closer. Every rank calls this at every step (one tiny
    all-reduce), so no rank waits for another."""
    n = (y_mask.sum(1) >= 2).sum() if loss == "ccc_window" else y_mask.sum()
    n = n.to(torch.float64)
    total = n.clone()
    torch.distributed.all_reduce(total)
    return (n * world / total.clamp_min(1.0)).to(torch.float32)


def _optimiser_step(cfg: TrainConfig, fit: ModelAndOptimiser, loss: torch.Tensor) -> None:
    fit.opt.zero_grad(set_to_none=True)
    if fit.scaler is not None:
        fit.scaler.scale(loss).backward()
        fit.scaler.unscale_(fit.opt)
    else:
        loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.grad_clip)
    if fit.scaler is not None:
        fit.scaler.step(fit.opt)
        fit.scaler.update()
    else:
        fit.opt.step()


def epoch_row(epoch: int, lr: float, loss_sum: float, nb: int, ev: EvalResult, train_s: float, epoch_s: float,
              n_windows: int) -> dict[str, Any]:
    """One metrics.csv row."""
    row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / max(nb, 1),
           "val_ccc_valence": ev.overall["valence"], "val_ccc_arousal": ev.overall["arousal"],
           "val_ccc_mean": ev.overall["mean"], "train_s": round(train_s, 3), "epoch_s": round(epoch_s, 3),
           "windows": n_windows}
    if ev.overall_smoothed:
        row.update({f"val_ccc_{k}_smoothed": v for k, v in ev.overall_smoothed.items()})
    return row


def _checkpoint_state(fit: ModelAndOptimiser, lrs: LRSchedule, epoch: int, stopping: EarlyStopping, cfg: TrainConfig,
                      stats: Stats, dims: Mapping[str, int]) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": fit.model.state_dict(), "optimizer": fit.opt.state_dict(),
            "scaler": fit.scaler.state_dict() if fit.scaler is not None else {},
            "lr_state": lrs.state_dict(), "epoch": epoch, "best": dict(stopping.best), "bad_epochs": stopping.bad,
            "history": list(stopping.history), "rng": rng, "config": cfg.to_dict(), "stats": stats.to_dict(),
            "dims": dict(dims), "fusion": cfg.fusion, "window": cfg.window, "model_options": dict(cfg.model)}


def _log_epoch(log: Callable[[str], None], row: Mapping[str, Any], improved: bool) -> None:
    from avpipe.fusion.progress import fit_line  # one terminal line per epoch

    log(fit_line(f"epoch {row['epoch']:3d} lr {row['lr']:.2e} loss {row['train_loss']:.4f} val CCC "
        f"V {row['val_ccc_valence']:.4f} A {row['val_ccc_arousal']:.4f} mean {row['val_ccc_mean']:.4f}"
        f"{' *' if improved else ''} ({row['epoch_s']:.1f}s)"))


# ----------------------------------------------------------------------------- training
def train(cfg: TrainConfig, *, source: FeatureSource | None = None, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] = print, max_epochs_this_call: int | None = None,
          bank: Any = None) -> dict[str, Any]:
    """Train ``cfg.fusion``; returns the final summary (best epoch, best validation metrics).

    Every message (``log`` lines and ``warnings.warn`` about the data) also goes to the run's
    ``run.log``, and the run folder gets ``run.json`` (how it was made): see
    :mod:`avpipe.fusion.runlog` and :func:`record_environment`. The rest is :func:`_train`.
    """
    rl = log if isinstance(log, RunLog) else RunLog(log)
    with rl.capturing_warnings():
        try:
            return _train(cfg, source=source, resume=resume, overwrite=overwrite, log=rl,
                          max_epochs_this_call=max_epochs_this_call, bank=bank)
        except BaseException as e:  # the console shows it (the CLI's Error: line); run.log must too
            rl.to_file(logging.ERROR, f"run ended: {type(e).__name__}: {e}")
            raise


def record_environment(run: RunDir, cfg: TrainConfig, device: torch.device, log: RunLog) -> None:
    """Open ``run.log`` and write ``run.json``: versions of every installed package, avpipe's git
    commit and dirty flag, command line, host, device, threads. A resumed run keeps its
    ``run_id`` (what ``avpipe compare`` counts runs by) and lists each session under ``sessions``."""
    from avpipe.provenance import environment_record

    log.open(run.path)
    rec = environment_record(device=str(device), threads=torch.get_num_threads())
    p = run.path / RUN_RECORD
    try:
        prev = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        prev = None
    if isinstance(prev, dict) and prev.get("run_id"):
        sessions = list(prev.get("sessions") or []) + [{k: rec[k] for k in ("created", "command", "host", "device",
                                                                              "threads", "git", "avpipe")}]
        rec = {**rec, "run_id": prev["run_id"], "created": prev.get("created", rec["created"]),
               "sessions": sessions}
    run.write_json(RUN_RECORD, rec)
    git = rec.get("git") or {}
    log.debug(f"run {rec['run_id']}: avpipe {rec['avpipe']}"
              + (f" (git {git['commit'][:12]}{' dirty' if git['dirty'] else ''})" if git else "")
              + f", torch {rec['packages'].get('torch')}, host {rec['host']}, {rec['device']}, "
              f"{rec['threads']} threads; command: {rec['command']}")
    if rec.get("lock_drift"):
        warnings.warn("this environment differs from requirements.lock: " + ", ".join(rec["lock_drift"][:8])
                      + (" ..." if len(rec["lock_drift"]) > 8 else ""), stacklevel=2)


def _train(cfg: TrainConfig, *, source: FeatureSource | None, resume: bool, overwrite: bool,
           log: RunLog, max_epochs_this_call: int | None, bank: Any) -> dict[str, Any]:
    """The training itself (see :func:`train`).

    An existing run in ``cfg.out`` is refused (:class:`~avpipe.fusion.run.RunConflictError`)
    unless ``resume`` or ``overwrite``. ``max_epochs_this_call`` stops after that many epochs
    (tests of resume). ``bank``: a :class:`avpipe.fusion.sweep.BankCache` that hands out already
    loaded and normalised banks (a sweep's runs share one load per process); None or a miss: load
    here as usual.
    """
    rank0, world0 = dist_info()[0] == 0, dist_info()[1]
    cfg = claim_run(cfg, resume=resume, overwrite=overwrite, check=rank0)
    run = RunDir(cfg.out)
    cfg = absolute_paths(cfg.resolved())
    saved_dist = saved_distributed(run) if resume else None
    check_world(cfg, world0, saved_dist)
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    main_proc = rank == 0
    from avpipe.pipeline.threads import default_num_threads

    torch.set_num_threads(cfg.num_threads or default_num_threads())  # not every core when some are taken
    seed_everything(cfg.seed)
    source = source if source is not None else open_source(cfg)
    splits = load_data(cfg, source, device, bank)
    plan = plan_for(cfg, source, sorted({r.video for r in splits.prep.train + splits.prep.val}))
    if main_proc:
        if overwrite and not resume:
            run.clear()  # only now: a run that fails to start (bad labels, no features) loses nothing
        run.create()
        save_config_file({**cfg.to_dict(), DISTRIBUTED: distributed_record(cfg, world)}, run.config)
        if saved_dist and int(saved_dist.get("world_size", world)) != world:
            log(f"resuming at world size {world} (was {saved_dist.get('world_size')}): the same global batch "
                f"{cfg.batch_size}, {int(cfg.batch_size) // world} per rank")
        record_environment(run, cfg, device, log)
        log(f"[{cfg.fusion}] {len(splits.prep.train)} train / {len(splits.prep.val)} val tracks; features "
            + ", ".join(f"{m}={s}@{f[:12]}" for m, (s, f) in splits.prep.fingerprints.items())
            + f"; loaded in {splits.load_s:.1f}s ({'chunked' if splits.train.chunked else 'in memory'}, {device})")
    dims = splits.train.dims
    fit = build_fit(cfg, dims, device, world)
    windows, n_windows = training_windows(cfg, splits.train, plan)
    lrs = make_schedule(cfg, fit.opt, steps_per_epoch(cfg, n_windows, world))
    stopping = EarlyStopping()
    best_state: dict[str, torch.Tensor] | None = None  # RJCMA reloads it after every epoch and at a restart
    if resume and run.last.is_file():
        stopping = restore(run, fit, lrs, device)
        if cfg.schedule == "rjcma_warmup" and run.best.is_file():
            best_state = run.load_checkpoint("best", map_location=device)["model"]
        if main_proc:
            log(f"resumed from epoch {stopping.start_epoch - 1} (best {stopping.best['score']:.4f} at epoch "
                f"{stopping.best['epoch']})")
    tb = _tensorboard(run) if main_proc else None
    done_this_call = 0
    for epoch in range(stopping.start_epoch, int(cfg.epochs)):
        if stopping.bad >= cfg.patience or lrs.stop:
            break
        if lrs.restart_due(epoch):  # RJCMA: fresh optimiser and warm-up from the best weights
            opt = make_optimizer(cfg, fit.model.parameters())
            if not lrs.restart(epoch, opt):
                break
            fit.opt = opt
            if best_state is not None:
                fit.model.load_state_dict(best_state)
            stopping.bad = 0
        te = time.perf_counter()
        loss_sum, nb, lr = train_epoch(cfg, fit, splits.train, windows, lrs, epoch, device, rank, world, plan)
        train_s = time.perf_counter() - te
        preds, labels, valid = predict_provider(fit.model, splits.val, cfg.window, int(cfg.eval_hop),
                                                int(cfg.batch_size) * 2, fit.amp, segments=plan)
        ev = evaluate(preds, labels, valid, cfg.smoothing)
        check_epoch(epoch, loss_sum, nb, ev, preds)  # NaN metrics fail the run, naming why
        score, val_loss = selection_score(cfg.selection or "ccc_mean", ev, preds, labels, valid)
        score = score if math.isfinite(score) else -math.inf if val_loss is not None else -1.0
        lrs.end_epoch(epoch, score, val_loss)
        row = epoch_row(epoch, lr, loss_sum, nb, ev, train_s, time.perf_counter() - te, n_windows)
        if val_loss is not None:
            row["val_loss"] = val_loss
        if cfg.selection not in (None, "ccc_mean"):
            row["val_selection"] = score
        improved = stopping.record(epoch, row, score)
        if cfg.schedule == "rjcma_warmup":  # the code resets the model to the best weights every epoch
            if improved:
                best_state = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
            elif best_state is not None:
                fit.model.load_state_dict(best_state)
        if main_proc:
            state = _checkpoint_state(fit, lrs, epoch, stopping, cfg, splits.stats, dims)
            if improved:
                run.save_checkpoint(state, "best")
            run.save_checkpoint(state, "last")
            run.write_metrics(stopping.history)
            if tb is not None:
                from avpipe.fusion.tensorboard import log_epoch

                log_epoch(tb, row, epoch)
            _log_epoch(log, row, improved)
        done_this_call += 1
        if max_epochs_this_call is not None and done_this_call >= max_epochs_this_call:
            break
    summary = {"fusion": cfg.fusion, "best_epoch": stopping.best["epoch"], "best": stopping.best,
               "epochs_run": len(stopping.history), "run": str(run.path), "load_s": splits.load_s}
    if main_proc:
        finish(run, cfg, splits.val, device, plan)
        run.write_json("summary.json", summary)
    if tb is not None:
        from avpipe.fusion.tensorboard import log_final

        log_final(tb, run.path, len(stopping.history))
        _log_hparams(tb, cfg, stopping.best)
        tb.close()
    return summary


def finish(run: RunDir, cfg: TrainConfig, va, device: torch.device, plan: SegmentPlan | None = None
           ) -> EvalResult | None:
    """Best model's validation predictions + plots (rank 0, end of training)."""
    if not run.best.is_file():
        return None
    ck = run.load_checkpoint("best", map_location=device)
    model = build_model_from_checkpoint(ck, device)
    preds, labels, valid = predict_provider(model, va, cfg.window, int(cfg.eval_hop), int(cfg.batch_size) * 2,
                                            segments=plan)
    ev = evaluate(preds, labels, valid, cfg.smoothing)
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


def _log_hparams(tb: Any, cfg: TrainConfig, best: Mapping[str, Any]) -> None:
    from avpipe.fusion.tensorboard import log_hparams

    log_hparams(tb, cfg.to_dict(), best)


def _tensorboard(run: RunDir):
    from avpipe.fusion.tensorboard import open_writer

    return open_writer(run.path)
