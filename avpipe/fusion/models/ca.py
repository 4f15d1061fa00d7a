"""``ca`` — vanilla cross-attention baseline (the "vanilla cross-attention module" JCA compares
against): visual queries attend to audio and audio queries to visual (multi-head, padding/invalid
keys masked), residual + LayerNorm, concat, then the baselines' trunk. Same capacity as
``concat`` plus the two attention layers, so ``jca`` vs ``ca`` isolates *joint* attention.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel, ModelInfo
from avpipe.fusion.models.baselines import Trunk
from avpipe.fusion.models.blocks import xavier_
from avpipe.fusion.models.maven import key_padding


@register_model
class CrossAttention(FusionModel):
    name = "ca"
    modalities = ("visual", "audio")
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                      "epochs": 30, "batch_size": 64}
    info = ModelInfo(paper="avpipe baseline (the vanilla cross-attention JCA compares against)", code="n/a (avpipe model)",
                     ours="multi-head cross-attention both ways, residual + LayerNorm, the baselines' trunk",
                     summary="baseline: vanilla cross-attention, audio+visual")

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 128, heads: int = 4,
                 dropout: float = 0.1, temporal: str = "lstm", clip_len: int = 1) -> None:
        super().__init__(dims, window, clip_len)
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], hidden) for m in self.modalities})
        xavier_(self.proj)
        self.att = nn.ModuleDict({m: nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
                                  for m in self.modalities})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(hidden) for m in self.modalities})
        self.trunk = Trunk(2 * hidden, hidden, temporal, dropout)

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        v, a = (self.proj[m](t) for m, t in zip(self.modalities, self.inputs(x, mask, self.modalities)))
        va, _ = self.att["visual"](v, a, a, key_padding_mask=key_padding(mask["audio"]), need_weights=False)
        av, _ = self.att["audio"](a, v, v, key_padding_mask=key_padding(mask["visual"]), need_weights=False)
        return self.trunk(torch.cat([self.norm["visual"](v + va), self.norm["audio"](a + av)], dim=-1))
