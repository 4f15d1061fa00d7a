"""The run folder: one place that knows its layout.

::

    <run>/config.json            resolved TrainConfig (fingerprints included)
    <run>/metrics.csv            one row per epoch (rewritten from the checkpoint's history on resume)
    <run>/checkpoints/last.pt    state dicts + RNG + history, every epoch (atomic)
    <run>/checkpoints/best.pt    same, at the best validation CCC
    <run>/plots/*.png            learning curves, prediction vs target
    <run>/predictions/val/*.csv  best model's validation predictions
    <run>/eval/                  ``avpipe evaluate`` output
    <run>/tensorboard/           when tensorboard is installed

Checkpoints hold only tensors and JSON-able values, so they load with ``weights_only=True``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from avpipe.pipeline.atomic import atomic_write_bytes, atomic_write_text


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

    def save_checkpoint(self, state: dict[str, Any], which: str = "last") -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.last if which == "last" else self.best, buf.getvalue())

    def load_checkpoint(self, which: str = "best", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        p = self.last if which == "last" else self.best
        if not p.is_file():
            raise FileNotFoundError(f"no {which} checkpoint in {self.path} ({p})")
        return torch.load(p, map_location=map_location, weights_only=True)

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
