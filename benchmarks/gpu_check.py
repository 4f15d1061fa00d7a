"""The GPU check: CUDA tests, per-model training epochs at three precisions, faces/visual speed.

What ``benchmarks/gpu_check.sh`` runs once the carried wheels are installed. Written for one lent
GPU machine and a fixed device budget, so every part is time-capped (``--budget-s``), the JSON is
rewritten after every measurement, and a part that fails records its error and the next part
still runs: whatever finished before the budget or a crash is in ``$OUT/gpu_check.json``.

Parts, in order (``--parts`` picks a subset):

* ``env``     torch/CUDA/device facts and the versions of the carried packages.
* ``tests``   the CUDA-marked tests (``pytest -m cuda`` on the files that use the marker).
* ``cache``   a synthetic Aff-Wild2-shaped cache through the store (``avpipe.fusion.synthetic``,
  as ``make_synthetic_cache.py`` writes it) at ``--scale`` of the 594 videos.
* ``train``   the fraction's train split loaded as ``avpipe train`` loads it (HDF5 → bank on the
  device, normalised), then tiled on the device to ``--epoch-frames`` rows (default: the
  2,312,912 train frames of the full-size synthetic split), so the window count and the bank's
  memory are an Aff-Wild2 epoch's. For each model (jca, rja, rjcma, dca, maven at their published
  settings) and each precision (fp32, fp16 and bf16 autocast): ``train_epoch`` of the trainer on
  ``--steps`` batches after a warm-up → windows/s, the epoch seconds this projects (train windows
  ÷ windows/s), peak GPU memory, and the validation CCC on the fraction's validation split (fixed
  by the seed) against fp32's after the same steps from the same initial weights. JCA also runs
  one whole epoch when the budget allows. First training losses (fp32, dropout off: the CPU and
  the GPU draw different dropout masks) are compared with the CPU's.
* ``extract`` 1280×720 H.264 clips made from the committed talking-head clip; decode alone;
  the ``faces`` stage (key frames + window-cascade tracking, as extraction runs it) on decoded
  frames and from the file (decode included, overlapped by its prefetch thread); MTCNN's full
  cascade batched across ``--faces-batch`` frames; the FaceNet architecture (InceptionResnetV1,
  random weights: the same arithmetic as the real ones, which are not on the machine) on the
  crops, and ``dlib-torch`` when its weights file is found. Rows and embeddings are compared
  with the CPU's on the first ``--ref-frames`` frames. Projects the wall time of 2.8 M frames
  through faces + visual on this one device.

``--dry-run`` shrinks every size (CPU, a minute or two) so the script is known to work before
device time is spent; tests/benchmarks/test_gpu_check.py runs it.

    python benchmarks/gpu_check.py --device cuda --out $OUT --budget-s 300
    python benchmarks/gpu_check.py --device cpu --dry-run --out /tmp/gpu_dry
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AFFWILD2_VIDEOS = 594
AFFWILD2_FRAMES = 2_800_000
# train frames of the full-size synthetic split (490 of 594 videos; BENCHMARKS.md, issue #11)
AFFWILD2_TRAIN_FRAMES = 2_312_912
EPOCH_GOAL_S = 30.0
EXTRACT_GOAL_S = 2 * 3600.0
MODELS = ("jca", "rja", "rjcma", "dca", "maven")
PRECISIONS = ("fp32", "fp16", "bf16")
AMP_OF = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}  # TrainConfig.amp for each precision
PARTS = ("env", "tests", "cache", "train", "extract")
LOSS_RTOL = 2e-3  # first fp32 losses, device vs CPU (TF32 convolutions round more coarsely)
CCC_TOL = 0.05  # |AMP CCC - fp32 CCC| after the same steps from the same weights
FACENET_TOL = 1e-3  # embeddings, device vs CPU (512-d, L2-normalised)
BOX_TOL_PX = 2.0  # faces rows (box, landmarks) device vs CPU, pixels at 720p


@dataclass
class Sizes:
    """Everything that differs between the device run and the CPU dry run."""

    scale: float = 0.05  # of Aff-Wild2's 594 videos in the synthetic cache
    video_frames: int | None = None  # mean frames per video (None: Aff-Wild2's, ≈ 4 714)
    epoch_frames: int = AFFWILD2_TRAIN_FRAMES  # rows of the tiled training bank
    steps: int = 30  # timed batches per model and precision
    warmup: int = 3
    step_cap_s: float = 20.0  # at most this long per model and precision
    batch_size: int | None = None  # None: each model's published batch
    loss_steps: int = 3  # first fp32 steps compared with the CPU
    loss_batch: int = 4
    clips: int = 2
    clip_seconds: float = 16.0
    clip_size: tuple[int, int] = (1280, 720)
    faces_batch: int = 32
    visual_batch: int = 256
    ref_frames: int = 100  # frames also run on the CPU for the feature comparison
    full_epoch: bool = True  # also one whole JCA epoch when the budget allows


DRY = Sizes(scale=0.01, video_frames=700, epoch_frames=6000, steps=1, warmup=1, step_cap_s=10.0, batch_size=2,
            loss_steps=2, loss_batch=2, clips=1, clip_seconds=1.2, clip_size=(320, 180), faces_batch=8,
            visual_batch=16, ref_frames=8, full_epoch=False)


# ----------------------------------------------------------------------------- bookkeeping
class Budget:
    """Wall-clock budget: each part may run until its share of the total has elapsed."""

    def __init__(self, seconds: float) -> None:
        self.total = float(seconds)
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, until: float = 1.0) -> float:
        """Seconds left before ``until`` (a fraction of the total) is reached."""
        return self.total * until - self.elapsed()


class Report:
    """The JSON result, rewritten (atomically) after every measurement, plus a log line each."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "parts": {}}
        out.mkdir(parents=True, exist_ok=True)
        self.save()

    def log(self, msg: str) -> None:
        print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def part(self, name: str) -> dict[str, Any]:
        return self.data["parts"].setdefault(name, {"status": "running"})

    def save(self) -> None:
        p = self.out / "gpu_check.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        os.replace(tmp, p)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: Any) -> int | None:
    """Peak bytes allocated by torch on the device since the last reset (None on CPU)."""
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ----------------------------------------------------------------------------- env
def part_env(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                           "cpus": os.cpu_count(), "device": a.device}
    if torch.cuda.is_available():
        i = torch.device(a.device).index or 0 if a.device.startswith("cuda") else 0
        p = torch.cuda.get_device_properties(i)
        out.update(device_name=p.name, capability=f"{p.major}.{p.minor}", device_memory=int(p.total_memory),
                   cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32)
    pk = {}
    for name in ("avpipe", "av", "facenet-pytorch", "pydantic", "pydantic-core", "numpy", "h5py",
                 "opencv-python-headless", "opencv-python", "torchvision", "pytest"):
        try:
            pk[name] = md.version(name)
        except md.PackageNotFoundError:
            pk[name] = None
    out["packages"] = pk
    return out


# ----------------------------------------------------------------------------- tests
def cuda_test_files() -> list[str]:
    """Test files that use the ``cuda`` marker (pytest then selects the marked tests in them):
    only those are collected, so test modules needing packages the GPU machine lacks do not
    stop the run."""
    files = []
    for p in sorted((ROOT / "tests").rglob("test_*.py")):
        if "pytest.mark.cuda" in p.read_text(errors="replace"):
            files.append(str(p.relative_to(ROOT)))
    return files


def part_tests(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    files = cuda_test_files()
    xml = Path(a.out) / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *files]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=max(10.0, budget.left(a.tests_until)))
        rc, tail = r.returncode, (r.stdout + r.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = None, f"timed out after {e.timeout:.0f}s"
    out: dict[str, Any] = {"files": files, "exit_code": rc, "seconds": time.perf_counter() - t, "output_tail": tail}
    if xml.is_file():
        cases = []
        for tc in ET.parse(xml).getroot().iter("testcase"):
            outcome, msg = "passed", ""
            for kind in ("failure", "error", "skipped"):
                el = tc.find(kind)
                if el is not None:
                    outcome, msg = kind, (el.get("message") or "")[:300]
            cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome, "message": msg})
        out["cases"] = cases
        out["counts"] = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    return out


# ----------------------------------------------------------------------------- cache
def part_cache(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

    data = Path(a.data)
    mean = sizes.video_frames or AFFWILD2_FRAMES / AFFWILD2_VIDEOS
    n = max(4, round(AFFWILD2_VIDEOS * sizes.scale))
    marker = data / "built.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("videos") != n or info.get("mean_frames") != mean:
            raise RuntimeError(f"--data {data} holds a cache of {info.get('videos')} videos, not the {n} asked "
                               f"for; give another --data folder")
        return {**info, "reused": True}
    if (data / "cache").exists() and getattr(a, "own_data", False):  # our temp folder, left by a killed run
        import shutil

        shutil.rmtree(data / "cache")
        shutil.rmtree(data / "labels", ignore_errors=True)
    elif (data / "cache").exists():
        raise RuntimeError(f"--data {data} has a cache/ that this script did not finish; remove it or give "
                           f"another --data folder")
    spec = SyntheticSpec(n_videos=n, min_frames=int(mean * 0.4), max_frames=int(mean * 1.6), dtype="float16",
                         val_fraction=76 / 432, seed=0, shard_size=16)
    t = time.perf_counter()
    make_corpus(data / "cache", data / "labels", spec)
    du = sum(p.stat().st_size for p in (data / "cache").rglob("*") if p.is_file())
    info = {"videos": n, "scale": sizes.scale, "mean_frames": mean, "seconds": time.perf_counter() - t,
            "disk_bytes": du, "path": str(data)}
    marker.write_text(json.dumps(info))
    return info


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
        from avpipe.fusion.windows import make_windows

        key = (int(cfg.window), int(cfg.hop), tuple(bank.x))
        if key not in self._windows:
            self._windows[key] = make_windows(bank.offsets, cfg.window, cfg.hop, bank.y_valid, require_labels=True)
        return self._windows[key]


def timed_steps(tb: TrainBench, model: str, precision: str, cap_s: float) -> tuple[dict[str, Any], Any]:
    """``--steps`` batches of the trainer's ``train_epoch`` after a warm-up; returns the row and
    the trained model (for the CCC on the validation split)."""
    import torch

    from avpipe.fusion.data import InMemoryBanks
    from avpipe.fusion.schedule import LRSchedule
    from avpipe.fusion.train import build_fit, seed_everything, train_epoch

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
    lrs = LRSchedule(cfg, fit.opt, math.ceil(n_win / B))
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
    from avpipe.fusion.schedule import LRSchedule
    from avpipe.fusion.train import build_fit, seed_everything, train_epoch

    dev = tb.device
    cfg = train_config(tb.a, tb.sizes, model, precision)
    tiled, _, _, _ = tb.loaded(model)
    w = tb.windows(tiled, cfg)
    reset_peak(dev)
    seed_everything(0)
    fit = build_fit(cfg, tiled.dims, dev, 1)
    lrs = LRSchedule(cfg, fit.opt, math.ceil(len(w) / int(cfg.batch_size)))
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


# ----------------------------------------------------------------------------- extraction
def make_clip(path: Path, n: int, size: tuple[int, int], fps: float = 25.0) -> Path:
    """A ``size`` H.264 clip of ``n`` frames: the committed talking-head clip's frames (a real
    face, MTCNN finds it) scaled to the clip's height and drifting across a moving background."""
    import cv2
    import numpy as np

    from avpipe.extractors.faces import iter_frames
    from avpipe.sample.media import write_clip

    src = list(iter_frames(ROOT / "tests/fixtures/media/talking_head.mp4"))
    W, H = size
    h0, w0 = src[0].shape[:2]
    sw = max(1, int(round(w0 * H / h0)))
    yy, xx = np.mgrid[0:H, 0:W + 64].astype(np.float32)
    back = np.stack([90 + 40 * np.sin(xx / 57.0), 110 + 30 * np.cos(yy / 43.0),
                     130 + 35 * np.sin((xx + yy) / 91.0)], -1).clip(0, 255).astype(np.uint8)

    def frames():
        for i in range(n):
            k = i % (2 * len(src) - 2) if len(src) > 1 else 0
            f = src[k if k < len(src) else 2 * len(src) - 2 - k]  # ping-pong: no jump at the loop
            t = i / fps
            s = int(32 + 32 * math.sin(2 * math.pi * t / 5))  # the background drifts too
            bg = back[:, s:s + W].copy()
            x0 = int((W - sw) / 2 + 0.1 * (W - sw) * math.sin(2 * math.pi * t / 8))
            fg = cv2.resize(f, (sw, H), interpolation=cv2.INTER_LINEAR)
            a, b = max(0, x0), min(W, x0 + sw)
            bg[:, a:b] = fg[:, a - x0:b - x0]
            yield bg

    write_clip(path, frames(), fps=fps)
    return path


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def part_extract(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import numpy as np
    import torch

    from avpipe.extractors.backbones.facenet import FacenetVggface2
    from avpipe.extractors.faces import Faces, FacesConfig, iter_frames
    from avpipe.pipeline.types import Runtime

    res = rep.part("extract")
    res.update(clips=[], goal_s=EXTRACT_GOAL_S, frames_projected=AFFWILD2_FRAMES, errors=[], skipped=[])
    dev = torch.device(a.device)
    until = a.extract_until
    n = max(1, int(round(sizes.clip_seconds * 25)))
    W, H = sizes.clip_size
    paths = []
    for c in range(sizes.clips):
        p, s = timed(lambda c=c: make_clip(Path(a.data) / "clips" / f"clip{c}_{W}x{H}.mp4", n + 7 * c, (W, H)))
        paths.append(p)
        res["clips"].append({"path": p.name, "frames": n + 7 * c, "size": [W, H], "make_s": s})
    rep.save()
    cfg = FacesConfig()
    faces_dev = Faces(cfg, runtime=Runtime(device=a.device, batch_size=sizes.faces_batch, num_threads=1))
    faces_dev.ensure_loaded()
    eng = faces_dev.engine
    assert eng is not None
    rows: dict[str, list[float]] = {k: [] for k in ("decode", "faces_frames", "faces_file", "mtcnn_batched",
                                                    "visual_facenet", "visual_dlib_torch")}
    nfr: dict[str, int] = {k: 0 for k in rows}
    crops_all = []
    first_frames: list[np.ndarray] = []
    first_rows = None
    for p in paths:
        if budget.left(until) < 10:
            res["skipped"].append(f"{p.name}: budget")
            continue
        frames, s = timed(lambda p=p: list(iter_frames(p)))
        rows["decode"].append(s)
        nfr["decode"] += len(frames)
        if not first_frames:
            first_frames = frames[: sizes.ref_frames]
        if p == paths[0]:  # warm-up: CUDA context, cuDNN autotuning, allocator
            faces_dev.process(iter(frames[:min(len(frames), 40)]), min(len(frames), 40))
            eng.detect(frames[:sizes.faces_batch])
        sync(dev)
        r, s = timed(lambda: faces_dev.process(iter(frames), len(frames)))
        sync(dev)
        rows["faces_frames"].append(s)
        nfr["faces_frames"] += len(frames)
        if first_rows is None:
            first_rows = r
        _, s = timed(lambda p=p, k=len(frames): faces_dev.process(iter_frames(p), k))
        sync(dev)
        rows["faces_file"].append(s)
        nfr["faces_file"] += len(frames)
        crops = np.asarray(r.extras["crops"])[np.asarray(r.mask, bool)]
        crops_all.append(crops)
        res["clips"][paths.index(p)].update(face_rows=int(np.asarray(r.mask).sum()),
                                            full_detections=int(r.attrs["full_detections"]))

        def batched(frames=frames):
            for i in range(0, len(frames), sizes.faces_batch):
                eng.detect(frames[i:i + sizes.faces_batch])
        _, s = timed(batched)
        sync(dev)
        rows["mtcnn_batched"].append(s)
        nfr["mtcnn_batched"] += len(frames)
        rep.log(f"{p.name}: decode {len(frames) / rows['decode'][-1]:.0f} f/s, faces "
                f"{len(frames) / rows['faces_frames'][-1]:.1f} f/s (decoded), "
                f"{len(frames) / rows['faces_file'][-1]:.1f} f/s (from file), batched MTCNN "
                f"{len(frames) / rows['mtcnn_batched'][-1]:.1f} f/s")
        rep.save()
    crops = np.concatenate(crops_all) if crops_all else np.zeros((0, 112, 112, 3), np.uint8)
    backbones: list[tuple[str, Any]] = [("visual_facenet", FacenetVggface2(random_init_for_tests=True))]
    try:
        from avpipe.extractors.backbones import create_backbone

        bb = create_backbone("dlib-torch")
        bb.load(a.device, {})
        backbones.append(("visual_dlib_torch", bb))
    except Exception as e:  # noqa: BLE001 - weights are not on the GPU machine
        res["skipped"].append(f"dlib-torch: {type(e).__name__}: {str(e)[:200]}")
    emb_ref: dict[str, Any] = {}
    for key, bb in backbones:
        if budget.left(until) < 5 or not len(crops):
            res["skipped"].append(f"{key}: budget or no crops")
            continue
        if key == "visual_facenet":
            bb.load(a.device, {})
        bb.embed(crops[: sizes.visual_batch])
        sync(dev)
        t = time.perf_counter()
        for i in range(0, len(crops), sizes.visual_batch):
            bb.embed(crops[i:i + sizes.visual_batch])
        sync(dev)
        rows[key].append(time.perf_counter() - t)
        nfr[key] += len(crops)
        emb_ref[key] = bb
    fps = {k: (nfr[k] / sum(v) if v and sum(v) > 0 else None) for k, v in rows.items()}
    res["frames_per_s"] = fps
    res["frames_timed"] = nfr
    res["seconds"] = {k: sum(v) for k, v in rows.items()}
    res["decode_excluded_faces_fps"] = fps["faces_frames"]
    res["decode_included_faces_fps"] = fps["faces_file"]
    if fps["faces_file"] and fps["visual_facenet"]:
        per_frame = 1 / fps["faces_file"] + 1 / fps["visual_facenet"]
        res["projection"] = {
            "how": "2.8 M frames x (1/faces f/s from the file + 1/visual f/s), one process on one device; "
                   "visual per frame with a face (every frame of these clips)",
            "seconds": AFFWILD2_FRAMES * per_frame, "hours": AFFWILD2_FRAMES * per_frame / 3600,
            "goal_hours": EXTRACT_GOAL_S / 3600, "meets_goal": AFFWILD2_FRAMES * per_frame <= EXTRACT_GOAL_S}
    rep.save()
    # device vs CPU on the first frames
    if first_frames and budget.left(until) > 5:
        try:
            res["vs_cpu"] = compare_cpu(first_frames, first_rows, crops[: sizes.ref_frames], emb_ref, cfg, a.device)
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"vs cpu: {type(e).__name__}: {e}")
    res["status"] = "done" if not res["errors"] else "errors"
    return res


def compare_cpu(frames: list[Any], dev_rows: Any, crops: Any, backbones: dict[str, Any], cfg: Any,
                device: str) -> dict[str, Any]:
    """Per-stage max abs difference between the device's and the CPU's outputs on the same input."""
    import numpy as np
    import torch

    from avpipe.extractors.backbones.facenet import FacenetVggface2
    from avpipe.extractors.faces import Faces
    from avpipe.pipeline.types import Runtime

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    k = len(frames)
    cpu = Faces(cfg, runtime=Runtime(device="cpu", num_threads=max(1, os.cpu_count() or 1)))
    r = cpu.process(iter(frames), k)
    m_dev, m_cpu = np.asarray(dev_rows.mask[:k], bool), np.asarray(r.mask, bool)
    both = m_dev & m_cpu
    d = np.abs(np.asarray(dev_rows.data[:k])[both][:, :14] - np.asarray(r.data)[both][:, :14])
    out: dict[str, Any] = {
        "frames": k, "faces": {"mask_agreement": float((m_dev == m_cpu).mean()),
                               "box_landmark_max_abs_px": float(d.max()) if d.size else None,
                               "box_landmark_mean_abs_px": float(d.mean()) if d.size else None,
                               "tol_px": BOX_TOL_PX,
                               "ok": bool((m_dev == m_cpu).all() and (not d.size or d.max() <= BOX_TOL_PX))}}
    for key, bb in backbones.items():
        if not len(crops):
            continue
        ref = FacenetVggface2(random_init_for_tests=True) if key == "visual_facenet" else type(bb)()
        ref.load("cpu", {})
        e_cpu = ref.embed(crops)
        e_dev = bb.embed(crops)
        diff = float(np.abs(e_cpu - e_dev).max())
        out[key] = {"crops": len(crops), "max_abs_diff": diff, "tol": FACENET_TOL, "ok": diff <= FACENET_TOL}
    return out


# ----------------------------------------------------------------------------- summary
def gib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def summary_lines(data: dict[str, Any]) -> list[str]:
    """A short markdown summary of whatever ran (also printed at the end)."""
    p = data["parts"]
    env = p.get("env", {})
    lines = [f"device: {env.get('device_name') or env.get('device')} (torch {env.get('torch')}, CUDA "
             f"{env.get('torch_cuda')}), budget {data['meta']['budget_s']:.0f}s, dry run: {data['meta']['dry_run']}"]
    t = p.get("tests", {})
    if "counts" in t:
        lines.append(f"CUDA tests: {t['counts']}")
    tr = p.get("train", {})
    if tr.get("rows"):
        lines += ["", f"epoch of {tr['epoch_frames']:,} frames (tiled from {tr['train_frames']:,}); goal "
                      f"{EPOCH_GOAL_S:.0f}s for jca", "",
                  "| model | precision | batch | windows/s | epoch s (projected) | peak GiB (of which bank) | val CCC "
                  "| vs fp32 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in tr["rows"]:
            vs = (f"{r['fp32_speedup']:.2f}x, ΔCCC {r['ccc_delta_vs_fp32']:+.3f}" if "fp32_speedup" in r else "")
            lines.append(f"| {r['model']} | {r['precision']} ({r['autocast']}) | {r['batch']} | "
                         f"{r['windows_s']:.1f} | {r['train_epoch_s_projected']:.1f} | "
                         f"{gib(r['peak_memory'])} ({gib(r['resident_before'])}) | {r['val_ccc']:.3f} | {vs} |")
        for f in tr.get("full_epochs", []):
            lines.append(f"whole jca epoch ({f['precision']}): {f['train_epoch_s']:.1f}s, {f['windows']:,} windows")
        for f in tr.get("first_losses", []):
            lines.append(f"first fp32 losses {f['model']}: device vs cpu max rel diff {f['max_rel_diff']:.2e} "
                         f"({'ok' if f['ok'] else 'NOT ok'})")
    ex = p.get("extract", {})
    if ex.get("frames_per_s"):
        f = ex["frames_per_s"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        lines += ["", "| stage | frames/s |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in f.items()]
        if "projection" in ex:
            pr = ex["projection"]
            lines.append(f"2.8 M frames through faces + visual: {pr['hours']:.2f} h (goal {pr['goal_hours']:.0f} h)")
        if "vs_cpu" in ex:
            lines.append(f"device vs CPU: {json.dumps(ex['vs_cpu'])}")
    for name, part in p.items():
        for what in part.get("skipped", []) if isinstance(part.get("skipped"), list) else []:
            lines.append(f"{name}: skipped {what}")
        for what in part.get("errors", []) if isinstance(part.get("errors"), list) else []:
            lines.append(f"{name}: error {what}")
        if part.get("error"):
            lines.append(f"{name}: ERROR {part['error']}")
    return lines


# ----------------------------------------------------------------------------- main
RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {"env": part_env, "tests": part_tests, "cache": part_cache,
                                                      "train": part_train, "extract": part_extract}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks/out/gpu_check"),
                    help="folder for gpu_check.json, the test report and the clips (default $OUT)")
    ap.add_argument("--data", default=None, help="synthetic cache folder (default OUT/../ a temp folder "
                                                 "outside OUT, so the cache is not carried back)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes: a CPU run of every part in a minute or two")
    ap.add_argument("--budget-s", type=float, default=270.0, help="wall-clock budget of the whole run (default 270: "
                                                                  "two runs and a start-up fit the 15 device minutes)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--scale", type=float, default=None, help="fraction of Aff-Wild2's videos in the cache")
    ap.add_argument("--epoch-frames", type=int, default=None, help="rows of the tiled training bank")
    ap.add_argument("--steps", type=int, default=None, help="timed batches per model and precision")
    ap.add_argument("--clip-seconds", type=float, default=None)
    ap.add_argument("--clips", type=int, default=None)
    # each part may run until this fraction of the budget has elapsed
    ap.add_argument("--tests-until", type=float, default=0.25, help=argparse.SUPPRESS)
    ap.add_argument("--train-until", type=float, default=0.62, help=argparse.SUPPRESS)
    ap.add_argument("--extract-until", type=float, default=0.97, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sizes = dataclasses.replace(DRY) if a.dry_run else Sizes()
    for k, v in (("scale", a.scale), ("epoch_frames", a.epoch_frames), ("steps", a.steps),
                 ("clip_seconds", a.clip_seconds), ("clips", a.clips)):
        if v is not None:
            setattr(sizes, k, v)
    parts = [x for x in a.parts.split(",") if x]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        ap.error(f"--parts: unknown {bad}; choose from {','.join(PARTS)}")
    a.out = str(Path(a.out).absolute())
    a.own_data = a.data is None
    if a.data is None:
        import tempfile

        a.data = str(Path(tempfile.gettempdir()) / f"avpipe_gpu_check_cache_{sizes.scale:g}")
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {a.device} but torch sees no CUDA device; use --device cpu --dry-run to "
              "check the script on a CPU", file=sys.stderr)
        return 2
    budget = Budget(a.budget_s)
    rep = Report(Path(a.out), {"argv": sys.argv[1:], "device": a.device, "dry_run": a.dry_run,
                               "budget_s": a.budget_s, "sizes": dataclasses.asdict(sizes), "data": a.data,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    failed = False
    skip: set[str] = set()
    for name in parts:
        if name in skip:
            rep.part(name).update(status="skipped", reason="no cache")
            continue
        rep.log(f"part {name} ({budget.elapsed():.0f}s of {budget.total:.0f}s used)")
        t = time.perf_counter()
        try:
            r = RUNNERS[name](a, sizes, rep, budget)
            part = rep.part(name)
            part.update(r)
            part.setdefault("status", "done")
            if part["status"] == "running":
                part["status"] = "done"
        except Exception as e:  # noqa: BLE001 - the next part still runs; the JSON says what broke
            failed = True
            part = rep.part(name)
            part.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
            rep.log(f"part {name} failed:\n{traceback.format_exc()}")
            if name == "cache":
                rep.log("no cache: skipping train")
                skip.add("train")
        rep.part(name)["seconds"] = time.perf_counter() - t
        rep.save()
    rep.data["meta"]["elapsed_s"] = budget.elapsed()
    rep.data["summary"] = summary_lines(rep.data)
    rep.save()
    (Path(a.out) / "gpu_check.md").write_text("\n".join(rep.data["summary"]) + "\n")
    print("\n".join(rep.data["summary"]), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
