"""Base class of every fusion model: the shared signature and the declarations the trainer reads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from avpipe.fusion.windows import expand_clips, pool_clips


class MissingModalityError(ValueError):
    """A model was asked to train without a modality it needs."""


@dataclass(frozen=True)
class ModelInfo:
    """What a registered name builds, for ``avpipe train --list`` and the docs.

    ``paper``: the publication; ``code``: what of this configuration equals the authors' released
    code (empty when there is no public code); ``ours``: what avpipe reconstructs or changes.
    """

    paper: str
    code: str
    ours: str
    summary: str = ""


class FusionModel(nn.Module):
    """``forward(x: {m: (B,T,D)}, mask: {m: (B,T) bool}) -> (B,T,2)`` (valence, arousal).

    Subclasses set ``name``, ``modalities`` (the ones they need), ``train_defaults`` (optimiser,
    schedule, window, hop and clip length of the authors' setup), ``preset`` (constructor options a
    registered name fixes, so ``rja`` and ``rja-shared`` share one class), ``info`` and optionally
    ``aux_losses``, and implement :meth:`fuse` on tokens.

    ``window`` is the window length T in frames; ``clip_len`` K > 1 pools every K frames to one
    token before :meth:`fuse` and expands the token predictions back to frames, so ``fuse`` sees
    ``tokens = T / K`` steps. Models with L×L weights (``window_fixed``) are built for exactly
    ``tokens`` steps.
    """

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()
    train_defaults: ClassVar[dict[str, Any]] = {}
    preset: ClassVar[dict[str, Any]] = {}
    aux_losses: ClassVar[dict[str, float]] = {}
    info: ClassVar[ModelInfo | None] = None
    window_fixed: ClassVar[bool] = False

    def __init__(self, dims: Mapping[str, int], window: int, clip_len: int = 1) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.window = int(window)
        self.clip_len = int(clip_len)
        if self.clip_len < 1:
            raise ValueError(f"model {self.name!r}: clip_len must be >= 1, got {clip_len}")
        if self.window % self.clip_len:
            raise ValueError(f"model {self.name!r}: window {self.window} is not a multiple of clip_len "
                             f"{self.clip_len}; choose a window that is (or clip_len 1 for per-frame tokens)")
        self.tokens = self.window // self.clip_len
        need = self.required_modalities({})
        missing = [m for m in need if m not in self.dims]
        if missing:
            raise MissingModalityError(f"model {self.name!r} needs modalities {missing}; "
                                       f"got dims for {sorted(self.dims)}")

    @classmethod
    def required_modalities(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(options.get("modalities") or cls.modalities)

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        T = next(iter(x.values())).shape[1]
        if self.window_fixed and T != self.window:
            raise ValueError(f"model {self.name!r} was built for windows of {self.window} "
                             f"frames, got {T}")
        if self.clip_len == 1:
            return self.fuse(x, mask)
        xt, mt = pool_clips(x, mask, self.clip_len)
        return expand_clips(self.fuse(xt, mt), self.clip_len, T)

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, 2) from tokens ``x`` {m: (B, L, D)} (frames when ``clip_len`` is 1)."""
        raise NotImplementedError

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
            mk = mask.get(m)
            out.append(t * mk.unsqueeze(-1).to(t.dtype) if mk is not None else t)
        return out
