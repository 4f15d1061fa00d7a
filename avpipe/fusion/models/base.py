"""Base class of every fusion model: the shared signature and the declarations the trainer reads."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn


class MissingModalityError(ValueError):
    """A model was asked to train without a modality it needs."""


class FusionModel(nn.Module):
    """``forward(x: {m: (B,T,D)}, mask: {m: (B,T) bool}) -> (B,T,2)`` (valence, arousal).

    Subclasses set ``name``, ``modalities`` (the ones they need), ``train_defaults`` (optimiser and
    schedule defaults from the paper/code, docs/models.md#training-defaults) and optionally ``aux_losses``.
    ``window`` is the fixed window length T: several models carry T×T weights (docs/models.md#building-blocks).
    """

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()
    train_defaults: ClassVar[dict[str, Any]] = {}
    aux_losses: ClassVar[dict[str, float]] = {}

    def __init__(self, dims: Mapping[str, int], window: int) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.window = int(window)
        need = self.required_modalities({})
        missing = [m for m in need if m not in self.dims]
        if missing:
            raise MissingModalityError(f"model {self.name!r} needs modalities {missing}; "
                                       f"got dims for {sorted(self.dims)}")

    @classmethod
    def required_modalities(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(options.get("modalities") or cls.modalities)

    def inputs(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
               names: tuple[str, ...]) -> list[torch.Tensor]:
        """The named inputs with invalid rows zeroed (no face, no word, padding).

        Zero = the training mean after normalisation, i.e. "no evidence"; the data path already
        zeroes them, this makes models safe on raw inputs too.
        """
        out = []
        for m in names:
            if m not in x:
                raise MissingModalityError(f"model {self.name!r}: input has no modality {m!r}")
            t = x[m]
            if t.shape[1] != self.window and self.window_fixed:
                raise ValueError(f"model {self.name!r} was built for windows of {self.window} "
                                 f"frames, got {t.shape[1]}")
            mk = mask.get(m)
            out.append(t * mk.unsqueeze(-1).to(t.dtype) if mk is not None else t)
        return out

    window_fixed: ClassVar[bool] = False
