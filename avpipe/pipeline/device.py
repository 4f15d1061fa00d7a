"""The one place that turns a ``--device`` value into a concrete device.

Why here: extraction stages (through :class:`avpipe.pipeline.types.Runtime`) and fusion training
and prediction both take ``--device auto``; resolved in two places, the two once disagreed about
which GPU a process owns. This module imports nothing from avpipe and imports torch only when
``auto`` has to be resolved, so stages without a model never pay for torch.
"""
from __future__ import annotations

import os


def resolve_device(device: str = "auto") -> str:
    """``auto`` → this process's GPU when torch sees one, else ``"cpu"``; anything else as given.

    "This process's GPU" is ``cuda:$LOCAL_RANK`` (set by ``torchrun`` for each rank), ``cuda:0``
    otherwise: an explicit index, so a multi-GPU launch never puts every rank on one card and
    the device string recorded with a run names the card it ran on."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; auto then means the CPU
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
