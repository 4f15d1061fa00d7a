"""Learning-rate schedules, built from ``torch.optim.lr_scheduler``.

* ``step`` — the base lr up to epoch ``step_start``, then × ``step_gamma`` every ``step_every``
  epochs (the JCA/RJA authors' schedule: 1e-3, × 0.8 every 2 epochs after epoch 5), counted as
  ``(epoch - step_start) // step_every`` — exactly their formula (a ceiling here would decay one
  epoch early). A :class:`~torch.optim.lr_scheduler.LambdaLR` stepped once per epoch.
* ``plateau`` — × ``plateau_factor`` after more than ``plateau_patience`` epochs without a
  validation-CCC gain of 1e-4, floored at ``min_lr``: :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`
  (mode ``max``, absolute threshold) stepped with the epoch's score.
* ``warmup_plateau`` — linear warm-up per batch over ``warmup_epochs`` (a ``LambdaLR`` over the
  batch count, from ``lr / n`` up to ``lr``), then ``plateau`` (RJCMA). The plateau counting
  starts after the warm-up.
* ``none`` — constant.

The state (:meth:`LRSchedule.state_dict`) holds only plain values, so it is checkpointed with the
rest of the run and a resumed run continues with the same learning rates.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

SCHEDULES = ("step", "plateau", "warmup_plateau", "none")


def step_decay_exponent(epoch: int, start: int, every: int) -> int:
    """How many times the ``step`` schedule has multiplied the lr by gamma at ``epoch``."""
    return (epoch - start) // every if epoch > start else 0


class LRSchedule:
    """One training run's learning-rate schedule over ``optimizer`` (see the module docstring)."""

    def __init__(self, cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {cfg.schedule!r}; use one of {', '.join(SCHEDULES)}")
        self.kind = cfg.schedule
        self.opt = optimizer
        self.warmup_epochs = int(cfg.warmup_epochs or 0) if self.kind == "warmup_plateau" else 0
        self.warmup_steps = self.warmup_epochs * max(1, int(steps_per_epoch))
        start, every, gamma = int(cfg.step_start), int(cfg.step_every), float(cfg.step_gamma)
        self.per_epoch = LambdaLR(optimizer, lambda e: gamma ** step_decay_exponent(e, start, every)) \
            if self.kind == "step" else None
        n = self.warmup_steps
        self.warmup = LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / n)) if n else None
        self.plateau = ReduceLROnPlateau(optimizer, mode="max", factor=float(cfg.plateau_factor),
                                         patience=int(cfg.plateau_patience), threshold=1e-4, threshold_mode="abs",
                                         min_lr=float(cfg.min_lr)) \
            if self.kind in ("plateau", "warmup_plateau") else None

    @property
    def lr(self) -> float:
        """The learning rate the next batch uses."""
        return float(self.opt.param_groups[0]["lr"])

    def start_epoch(self, epoch: int) -> None:
        """Nothing: these schedules advance at the end of an epoch."""

    def before_batch(self, epoch: int, step: int) -> None:
        """Nothing: the warm-up advances after each batch."""

    stop = False

    def restart_due(self, epoch: int) -> bool:
        return False

    def after_batch(self) -> None:
        """Advance the per-batch warm-up (until it reaches the base lr)."""
        if self.warmup is not None and self.warmup.last_epoch + 1 < self.warmup_steps:
            self.warmup.step()

    def end_epoch(self, epoch: int, val_score: float, val_loss: float | None = None) -> None:
        """Advance the per-epoch schedules after ``epoch`` with its validation score."""
        if self.per_epoch is not None:
            self.per_epoch.step()
        if self.plateau is None:
            return
        if epoch + 1 == self.warmup_epochs:  # warm-up over: the base lr, whatever the batch count was
            for g in self.opt.param_groups:
                g["lr"] = g["initial_lr"]
        if epoch + 1 > self.warmup_epochs:
            self.plateau.step(val_score)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: s.state_dict() for k, s in
                                      (("per_epoch", self.per_epoch), ("warmup", self.warmup),
                                       ("plateau", self.plateau)) if s is not None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            return  # a checkpoint from before these schedulers: the optimiser state holds the lr
        for k, s in (("per_epoch", self.per_epoch), ("warmup", self.warmup), ("plateau", self.plateau)):
            if s is not None and k in state:
                s.load_state_dict(state[k])
