"""The authors' learning-rate controllers that ``torch.optim.lr_scheduler`` has no exact twin for.

* ``praveen_av`` (RJA, DCA) — the config lr for epochs 0 … ``step_start``, then
  ``step_peak_lr · step_gamma^⌊(e − step_start)/step_every⌋`` (their ``set_lr`` runs only once
  epoch > 5). Their ReduceLROnPlateau on the training loss is overwritten by ``set_lr`` at every
  epoch start, so it never changes an lr and is not reproduced.
* ``rjcma_warmup`` (RJCMA) — before every training step b of epoch e (relative to the epoch ``i0``
  the optimiser was built): ``b · lr · (e − i0 + 1)/(25 M)`` while e − i0 < 5 (a per-epoch sawtooth,
  peak lr/5); lr from the end of epoch i0 + 4; then a plateau on the validation CCC (mode max): an
  improvement resets the bad-epoch count, which grows only after the warm-up (e − i0 + 1 > 5), and
  when it exceeds ``plateau_patience`` the lr is multiplied by ``plateau_factor`` (no floor). When the
  lr falls below 1e-8 (after the 4th cut) the code restarts: :attr:`restart_due` tells the trainer,
  which builds a new optimiser, reloads the best weights and calls :meth:`restart`. Early stopping:
  a counter of 50 decremented after each non-improving epoch with e − i0 > 5 (:attr:`stop`).
* ``plateau_loss`` (MAVEN) — ReduceLROnPlateau on the validation **loss** (mode min, PyTorch's
  default relative threshold 1e-4), ``plateau_factor``/``plateau_patience``.

State is plain values (:meth:`state_dict`), checkpointed with the run.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from avpipe.fusion.recipes import praveen_av_lr, rjcma_warmup_lr

RECIPE_SCHEDULES = ("praveen_av", "rjcma_warmup", "plateau_loss")
#: RJCMA: restart when the lr is below this; the code allows 3 releases (epoch 0 + two restarts)
RJCMA_RESTART_LR, RJCMA_RELEASES, RJCMA_EARLY_STOP = 1e-8, 3, 50


class RecipeSchedule:
    """One run's authors' schedule (see the module docstring); the same interface as
    :class:`avpipe.fusion.schedule.LRSchedule`."""

    def __init__(self, cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        if cfg.schedule not in RECIPE_SCHEDULES:
            raise ValueError(f"unknown schedule {cfg.schedule!r}")
        self.kind = cfg.schedule
        self.cfg = cfg
        self.opt = optimizer
        self.M = max(1, int(steps_per_epoch))
        self.base = float(cfg.lr)
        self.state: dict[str, Any] = {"i0": 0, "best": None, "bad": 0, "cur": self.base, "releases": 1,
                                      "gbest": None, "early": RJCMA_EARLY_STOP, "stop": False}
        self.plateau = ReduceLROnPlateau(optimizer, mode="min", factor=float(cfg.plateau_factor),
                                         patience=int(cfg.plateau_patience)) if self.kind == "plateau_loss" else None

    def _set(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def start_epoch(self, epoch: int) -> None:
        """Set the epoch's lr (praveen_av; rjcma after its warm-up)."""
        if self.kind == "praveen_av":
            c = self.cfg
            self._set(praveen_av_lr(epoch, self.base, float(c.step_peak_lr), int(c.step_start), int(c.step_every),
                                    float(c.step_gamma)))
        elif self.kind == "rjcma_warmup":
            self._set(self.state["cur"])

    def before_batch(self, epoch: int, step: int) -> None:
        """RJCMA's warm-up sets the lr before every step (``step`` restarts at 0 each epoch)."""
        if self.kind == "rjcma_warmup":
            rel = epoch - self.state["i0"]
            if rel < int(self.cfg.warmup_epochs):
                self._set(rjcma_warmup_lr(step, self.M, rel, self.base, int(self.cfg.warmup_epochs)))

    def after_batch(self) -> None:
        pass

    def end_epoch(self, epoch: int, val_score: float, val_loss: float | None = None) -> None:
        if self.kind == "plateau_loss":
            if val_loss is not None and math.isfinite(val_loss):
                self.plateau.step(val_loss)
            return
        if self.kind != "rjcma_warmup":
            return
        s, rel, w = self.state, epoch - self.state["i0"], int(self.cfg.warmup_epochs)
        if rel == w - 1:
            s["cur"] = self.base
            self._set(self.base)
        if s["gbest"] is None or val_score > s["gbest"]:
            s["gbest"], s["early"] = float(val_score), RJCMA_EARLY_STOP
        elif rel > w:
            s["early"] -= 1
            s["stop"] = s["early"] <= 0
        if s["best"] is None or val_score > s["best"]:
            s["best"], s["bad"] = float(val_score), 0
            return
        if rel + 1 > w:
            s["bad"] += 1
            if s["bad"] > int(self.cfg.plateau_patience):
                s["cur"] = self.lr * float(self.cfg.plateau_factor)
                self._set(s["cur"])
                s["bad"] = 0

    def restart_due(self, epoch: int) -> bool:
        """RJCMA: at the start of ``epoch``, does the code restart (lr below 1e-8 after the warm-up)?"""
        s = self.state
        return (self.kind == "rjcma_warmup" and s["cur"] < RJCMA_RESTART_LR and epoch >= int(self.cfg.warmup_epochs)
                and epoch - s["i0"] > int(self.cfg.warmup_epochs))

    def restart(self, epoch: int, optimizer: torch.optim.Optimizer) -> bool:
        """A restart at ``epoch`` with a fresh ``optimizer``; False when the releases are used up
        (the code then ends training)."""
        s = self.state
        if s["releases"] >= RJCMA_RELEASES:
            s["stop"] = True
            return False
        s.update(i0=epoch, best=None, bad=0, cur=self.base, releases=s["releases"] + 1, early=RJCMA_EARLY_STOP)
        self.opt = optimizer
        self._set(self.base)
        return True

    @property
    def stop(self) -> bool:
        return bool(self.state["stop"])

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "recipe": dict(self.state)}
        if self.plateau is not None:
            out["plateau"] = self.plateau.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            return
        self.state.update(state.get("recipe", {}))
        if self.plateau is not None and "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
