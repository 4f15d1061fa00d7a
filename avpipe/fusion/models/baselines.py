"""Baselines: unimodal ``audio``, ``visual``, ``text`` and multimodal ``concat``.

All share one trunk so that a fusion model's gain over them is the fusion, not extra capacity
or temporal context: per-modality Linear d_m→h → ReLU → 1-layer BiLSTM (h/2 per direction) →
Linear h→h/2 → ReLU → Linear →2 (``temporal="none"`` drops the LSTM: a per-frame MLP).
``concat`` takes ``modalities=[...]`` (default visual + audio).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel, ModelInfo
from avpipe.fusion.models.blocks import xavier_


class Trunk(nn.Module):
    def __init__(self, in_dim: int, hidden: int, temporal: str = "lstm", dropout: float = 0.1) -> None:
        super().__init__()
        if temporal not in ("lstm", "none"):
            raise ValueError("temporal must be 'lstm' or 'none'")
        self.lstm = nn.LSTM(in_dim, hidden // 2, batch_first=True, bidirectional=True) if temporal == "lstm" else None
        out = hidden if self.lstm is not None else in_dim
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 2))
        xavier_(self.head)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.lstm is not None:
            h, _ = self.lstm(h)
        return self.head(h)


class _Projected(FusionModel):
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                      "epochs": 30, "batch_size": 64}
    info = ModelInfo(paper="avpipe baseline", code="n/a (avpipe model)", ours="shared trunk: Linear+ReLU per modality, BiLSTM, MLP",
                     summary="baseline")

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 128, temporal: str = "lstm",
                 dropout: float = 0.1, modalities: list[str] | None = None, clip_len: int = 1) -> None:
        self._mods = tuple(modalities or self.modalities)
        super().__init__(dims, window, clip_len)
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(self.dims[m], hidden), nn.ReLU()) for m in self._mods})
        xavier_(self.proj)
        self.trunk = Trunk(hidden * len(self._mods), hidden, temporal, dropout)

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = [self.proj[m](t) for m, t in zip(self._mods, self.inputs(x, mask, self._mods))]
        return self.trunk(torch.cat(xs, dim=-1))


@register_model
class AudioOnly(_Projected):
    info = ModelInfo(paper="avpipe baseline", code="n/a (avpipe model)", ours="the baselines' shared trunk", summary='unimodal baseline: audio only')
    name = "audio"
    modalities = ("audio",)


@register_model
class VisualOnly(_Projected):
    info = ModelInfo(paper="avpipe baseline", code="n/a (avpipe model)", ours="the baselines' shared trunk", summary='unimodal baseline: visual only')
    name = "visual"
    modalities = ("visual",)


@register_model
class TextOnly(_Projected):
    info = ModelInfo(paper="avpipe baseline", code="n/a (avpipe model)", ours="the baselines' shared trunk", summary='unimodal baseline: text only')
    name = "text"
    modalities = ("text",)


@register_model
class Concat(_Projected):
    name = "concat"
    info = ModelInfo(paper="avpipe baseline", code="n/a (avpipe model)", ours="the baselines' shared trunk on concatenated modalities",
                     summary="multimodal baseline: concatenation (modalities=[...])")
    modalities: ClassVar[tuple[str, ...]] = ("visual", "audio")  # or the ``modalities`` option (base class)
