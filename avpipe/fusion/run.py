"""The run folder: one place that knows its layout.

::

    <run>/config.json            resolved TrainConfig (fingerprints included)
    <run>/run.json               how it was made: run id, package versions, git, command, host, device
    <run>/run.log                every message of training, with time and level (appended on resume)
    <run>/metrics.csv            one row per epoch (rewritten from the checkpoint's history on resume)
    <run>/checkpoints/last.pt    state dicts + RNG + history, every epoch (atomic)
    <run>/checkpoints/best.pt    same, at the best validation CCC
    <run>/plots/*.png            learning curves, prediction vs target
    <run>/predictions/val/*.csv  best model's validation predictions
    <run>/eval/                  ``avpipe evaluate`` output
    <run>/tensorboard/           when tensorboard is installed

Checkpoints hold only tensors and JSON-able values, so they load with ``weights_only=True``.

Runs are never lost: :meth:`RunDir.claim` refuses a folder that already holds a run unless the
caller resumes it (same model and features) or explicitly overwrites it, and a checkpoint that
cannot be loaded safely is one :class:`CheckpointError` line, not a pickle traceback.
"""
from __future__ import annotations

import csv
import io
import json
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avpipe.pipeline.atomic import atomic_write_bytes, atomic_write_text


#: What a run folder holds (and all that ``--overwrite`` deletes: never anything else in it).
RUN_ENTRIES = ("config.json", "metrics.csv", "summary.json", "checkpoints", "plots", "predictions", "eval",
               "tensorboard", "run.json", "run.log")
#: The environment record (:func:`avpipe.fusion.train.record_environment`).
RUN_RECORD = "run.json"


class RunConflictError(ValueError):
    """The run folder and the request disagree (exists without --resume, other model, a file)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded (damaged, or holding objects ``weights_only`` refuses)."""


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.csv")
    ckpt_dir = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    plots = property(lambda self: self.path / "plots")
    predictions = property(lambda self: self.path / "predictions")
    eval_dir = property(lambda self: self.path / "eval")

    def create(self) -> "RunDir":
        for p in (self.path, self.ckpt_dir, self.plots):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.config.is_file()

    def has_run(self) -> bool:
        """A config or a checkpoint is there: training in this folder would replace a run."""
        return self.config.is_file() or self.last.is_file() or self.best.is_file()

    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Check, before any work, that a run may be written here: refuse an existing run unless
        ``resume`` (checked against the run's config by :meth:`check_resume`) or ``overwrite``
        (the old run is deleted by :meth:`clear` only once the new one is ready to start)."""
        shown = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise RunConflictError(f"--out {shown!r} is a file, not a run folder; give a folder path")
        for parent in self.path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise RunConflictError(f"--out {shown!r}: {str(parent)!r} is a file, not a folder")
                break
        if not self.has_run() or resume:
            return
        if not overwrite:
            raise RunConflictError(
                f"--out {shown!r} already holds a run ({self._describe()}); use --resume to continue it, "
                f"--overwrite to replace it, or another --out")

    def clear(self) -> None:
        """Delete a previous run's files (:data:`RUN_ENTRIES`), nothing else in the folder."""
        for name in RUN_ENTRIES:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def _describe(self) -> str:
        try:
            cfg = json.loads(self.config.read_text(encoding="utf-8"))
            return f"fusion {cfg.get('fusion')!r}, {len(self.read_metrics())} epoch(s) done"
        except (OSError, ValueError):
            return "checkpoints present"

    def check_resume(self, saved: Mapping[str, Any], asked: Mapping[str, Any]) -> None:
        """``--resume`` continues *this* run: the model and the features asked for must be the
        run's (options left empty take the run's). ``saved``/``asked``: TrainConfig dicts."""
        diffs = []
        if asked.get("fusion") and asked["fusion"] != saved.get("fusion"):
            diffs.append(f"--fusion {asked['fusion']!r} but the run trains {saved.get('fusion')!r}")
        a_feat, s_feat = dict(asked.get("features") or {}), dict(saved.get("features") or {})
        resolved = dict(saved.get("resolved_features") or {})
        if a_feat and s_feat and not all(_same_ref(m, v, s_feat, resolved) for m, v in a_feat.items()):
            diffs.append(f"--features {a_feat} but the run uses {s_feat}")
        a_model = dict(asked.get("model") or {})
        if a_model and any(saved.get("model", {}).get(k) != v for k, v in a_model.items()):
            diffs.append(f"model options {a_model} but the run has {saved.get('model')}")
        if diffs:
            raise RunConflictError(f"--resume {str(self.path)!r}: " + "; ".join(diffs)
                                   + " (resume with the run's settings, or train into another --out)")

    def save_checkpoint(self, state: dict[str, Any], which: str = "last") -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.last if which == "last" else self.best, buf.getvalue())

    def load_checkpoint(self, which: str = "best", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        p = self.last if which == "last" else self.best
        if not p.is_file():
            raise CheckpointError(f"no {which} checkpoint in {str(self.path)!r} ({p.name} missing)")
        try:
            return torch.load(p, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            if found:
                raise CheckpointError(
                    f"{str(p)!r} was refused: it holds a Python object ({found.group(1)}) other than tensors "
                    f"and plain values, which could run code when loaded (torch.load weights_only=True). avpipe "
                    f"never writes such checkpoints; only use run folders you trust") from e
            raise CheckpointError(f"{str(p)!r} is not a readable checkpoint (damaged or not written by "
                                  f"avpipe)") from e
        except (RuntimeError, EOFError, ValueError, OSError) as e:
            raise CheckpointError(f"{str(p)!r} is not a readable checkpoint (damaged or truncated: "
                                  f"{type(e).__name__})") from e

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the whole CSV from the history (atomic; consistent after a resume)."""
        if not history:
            return
        cols: list[str] = []
        for row in history:
            cols += [k for k in row if k not in cols]
        s = io.StringIO()
        w = csv.DictWriter(s, fieldnames=cols)
        w.writeheader()
        w.writerows(history)
        atomic_write_text(self.metrics, s.getvalue())

    def read_metrics(self) -> list[dict[str, str]]:
        if not self.metrics.is_file():
            return []
        with open(self.metrics, newline="") as fh:
            return list(csv.DictReader(fh))

    def write_json(self, rel: str, data: Any) -> Path:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")
        return p


def _same_ref(modality: str, asked: str, saved: Mapping[str, str], resolved: Mapping[str, Any]) -> bool:
    """Does ``modality=asked`` name what the run trained on? ``visual=visual`` matches a run that
    pinned ``visual@<fp>``; ``visual=visual@ab12`` matches when the run's fingerprint starts so."""
    if saved.get(modality) == asked:
        return True
    stage, _, fp = asked.partition("@")
    s_stage = str(saved.get(modality, "")).partition("@")[0]
    r = resolved.get(modality) or {}
    return stage == s_stage and (not fp or str(r.get("fingerprint", "")).startswith(fp))
