"""Inference helpers shared by training (validation, final predictions) and prediction.

Why a module of its own: ``train`` needs them to score each epoch and the
:class:`~avpipe.fusion.predictor.Predictor` needs them to serve a trained run; kept in either,
the two would import each other.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import ChunkedBanks, InMemoryBanks
from avpipe.fusion.models import create_model
from avpipe.fusion.run import RunConflictError, RunDir
from avpipe.fusion.windows import batches, make_windows
from avpipe.pipeline.atomic import atomic_write_text
from avpipe.pipeline.device import resolve_device as pipeline_device

FORMATS = ("csv", "affwild2")


def resolve_device(device: str) -> torch.device:
    """:func:`avpipe.pipeline.device.resolve_device` as the ``torch.device`` training needs."""
    return torch.device(pipeline_device(device))


def build_model_from_checkpoint(ck: Mapping[str, Any], device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model a checkpoint describes (name, dims, window, options) with its weights, in eval mode."""
    from avpipe.fusion.segments import legacy_fusion

    # a maven checkpoint from before segment tokens holds the per-frame front end (maven-frames)
    model = create_model(legacy_fusion(ck) or ck["fusion"], ck["dims"], ck["window"], **ck["model_options"])
    model.load_state_dict(ck["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict_provider(model: torch.nn.Module, provider: InMemoryBanks | ChunkedBanks, window: int, hop: int,
                     batch_size: int, amp: tuple[bool, torch.dtype] = (False, torch.float32),
                     segments: Any = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-track predictions (overlapping windows averaged per frame), labels and label masks.
    ``segments`` (a :class:`~avpipe.fusion.segments.SegmentPlan`): one window per transcript
    segment piece, each batch as long as its longest piece (maven's sequences)."""
    was = model.training
    model.eval()
    preds, labels, valid = {}, {}, {}
    for bank in provider.groups(0, None):
        w = make_windows(bank.offsets, window, hop) if segments is None else segments.windows(bank, window, hop)
        acc = torch.zeros(bank.n_rows, 2, device=bank.device)
        cnt = torch.zeros(bank.n_rows, device=bank.device)
        for idx in batches(len(w), batch_size, seed=None, device=bank.device):
            sel = w.select(idx)
            b = bank.gather(sel, window if segments is None else int(sel.length.max()))
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


def write_prediction(path: str | Path, pred: np.ndarray, fmt: str = "csv", *, clip: bool = False,
                     present: Mapping[str, np.ndarray] | None = None, times: np.ndarray | None = None) -> Path:
    """One video's (n, 2) predictions: the model's raw outputs, or clipped to [-1, 1] with ``clip``.

    Why raw by default: clipping silently hid how far a model overshoots (a real clip had 91 %
    of its valence at ±1) and made the file disagree with ``render``, which shows raw values.
    ``csv`` adds ``time`` (seconds, when known) and one ``<modality>_present`` column (1/0) per
    modality: whether the model had a face / audio / words at that frame (``present``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use {FORMATS}")
    p = np.asarray(pred, dtype=np.float64)
    if clip:
        p = np.clip(p, -1, 1)
    s = io.StringIO()
    w = csv.writer(s, lineterminator="\n")
    if fmt == "csv":
        mods = sorted(present or {})
        t = times if times is not None and len(times) >= len(p) else None
        w.writerow(["frame"] + (["time"] if t is not None else []) + ["valence", "arousal"]
                   + [f"{m}_present" for m in mods])
        for i, (v, a) in enumerate(p):
            w.writerow([i] + ([f"{t[i]:.6f}"] if t is not None else []) + [f"{v:.6f}", f"{a:.6f}"]
                       + [int(bool(present[m][i])) for m in mods])
    else:
        w.writerow(["valence", "arousal"])
        w.writerows((f"{v:.6f}", f"{a:.6f}") for v, a in p)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, s.getvalue())
    return path


def load_run(path: str | Path) -> tuple[RunDir, TrainConfig]:
    """A run folder and its recorded config (:class:`RunConflictError`, a usage error, when the
    path is not a run folder)."""
    run = RunDir(path)
    if not run.exists():
        raise RunConflictError(f"{str(path)!r} is not a run folder (no config.json); give the --out folder "
                               f"of a train run")
    cfg = TrainConfig.load_run_config(run.config)
    cfg.out = str(run.path.absolute())  # the folder given is the run, wherever it was trained
    return run, cfg
