"""Why a training epoch's numbers are not numbers: fail the run with the cause, never exit 0.

Unchecked, a run whose loss or validation CCC is NaN finishes with "val CCC nan" and exit 0: a
diverged optimiser, features full of NaN and a validation split with no labelled frame all
look like success. :func:`check_epoch` runs after every epoch's evaluation and raises
:class:`TrainingFailed` (exit 1, one line) naming which of those it is.

One NaN is left alone on purpose: a CCC that is 0/0 because predictions and labels are both
constant over finite values (a model that has not learned yet on a tiny split). That is a
score, not a failure, and the trainer counts it as the worst one.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class TrainingFailed(RuntimeError):
    """An epoch produced non-finite numbers for a reason the user must fix."""


def check_epoch(epoch: int, loss_sum: float, n_batches: int, ev: Any,
                preds: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`TrainingFailed` when epoch ``epoch``'s loss or metrics are not finite for a
    reason that will not go away by itself (see the module docstring)."""
    where = f"epoch {epoch + 1}"
    if n_batches and not math.isfinite(loss_sum):
        raise TrainingFailed(f"{where}: the training loss is {loss_sum} (diverged): lower the learning rate "
                             "or weight decay, or check the features for NaN/inf values")
    if ev.n_frames == 0:
        raise TrainingFailed(f"{where}: the validation split has no labelled frame (every label is -5 or "
                             "NaN), so no metric can be computed; label some validation frames or choose "
                             "another split")
    bad = [name for name, p in preds.items() if not np.isfinite(np.asarray(p, dtype=np.float64)).all()]
    if bad:
        raise TrainingFailed(f"{where}: the model predicts NaN/inf for {len(bad)} validation video(s) (e.g. "
                             f"{bad[0]!r}): training diverged or the features hold non-finite values")
