"""IACA — Inconsistency-Aware Cross-Attention (Praveen & Alam, 2024). docs/models.md#iaca.

**Reconstruction** (docs/models.md#iaca-in-avpipe): no public code exists; the abstract
confirms only "a two-stage gating mechanism". This module implements the reconstruction built on
the public DCA code (its stage-1 mechanism):

1. per-modality encoders as in RJA (L2 norm, visual Linear, BLSTMs);
2. cross-attention: JCA-v2 on {v, a}, N = 2 stacked layers (the DCA code) → X̂_v, X̂_a;
3. self branch S_m: the un-attended features (``self_branch="identity"``, = DCA) or single-head
   self-attention over time (``"attention"``);
4. stage-1 gate per modality: ``g_m = softmax([X̂_m | S_m] W_1 / τ)``,
   ``Z_m = ReLU(g0·S_m + g1·X̂_m)`` (DCA feeds only X̂_m to the gate; feeding both is the cheap
   improvement over DCA — ``gate_input="both"`` default, ``"attended"`` = DCA);
5. stage-2 gate across modalities: ``h = softmax([Z_v | Z_a] W_2 / τ)``, ``F = [h0 Z_v | h1 Z_a]``
   (lets the model down-weight a corrupted or missing audio stream); ``stage2=False`` = DCA;
6. joint BLSTM 2h→h → V/A heads. τ = 0.1.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.blocks import DCAGate, RecursiveJointAttention
from avpipe.fusion.models.rja import RJA


class _SelfAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.scale = 1 / math.sqrt(d)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        s = (self.q(x) @ self.k(x).transpose(1, 2)) * self.scale
        s = s.masked_fill(~valid.unsqueeze(1), -1e4)
        return torch.softmax(s, dim=-1) @ self.v(x)


@register_model
class IACA(RJA):
    name = "iaca"
    modalities = ("visual", "audio")
    # DCA code (docs/models.md#dca-released-code): AdamW wd 1e-5, effective 1e-3 ×0.8/2 epochs schedule, 100 epochs.
    train_defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-5, "schedule": "step",
                      "epochs": 100, "batch_size": 64}

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 512, layers: int = 2,
                 tau: float = 0.1, self_branch: str = "identity", gate_input: str = "both",
                 stage2: bool = True, dropout: float = 0.6, lstm_dropout: float = 0.1,
                 use_query_proj: bool = True) -> None:
        super().__init__(dims, window, hidden=hidden, iterations=layers, shared=False,
                         dropout=dropout, lstm_dropout=lstm_dropout, use_query_proj=use_query_proj)
        if self_branch not in ("identity", "attention"):
            raise ValueError("self_branch must be 'identity' or 'attention'")
        if gate_input not in ("both", "attended"):
            raise ValueError("gate_input must be 'both' or 'attended'")
        self.self_branch, self.gate_input, self.stage2 = self_branch, gate_input, stage2
        self.self_attn = nn.ModuleList([_SelfAttention(hidden) for _ in range(2)]) \
            if self_branch == "attention" else None
        gin = 2 * hidden if gate_input == "both" else hidden
        self.gate1 = nn.ModuleList([DCAGate(gin, tau) for _ in range(2)])
        self.gate2 = DCAGate(2 * hidden, tau) if stage2 else None
        self.tau = tau

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = self.encode(x, mask)
        att = self.attn(xs)
        zs = []
        for i, (m, X, Xh) in enumerate(zip(self.modalities, xs, att)):
            S = self.self_attn[i](X, mask[m]) if self.self_attn is not None else X
            gin = torch.cat([Xh, S], dim=-1) if self.gate_input == "both" else Xh
            zs.append(self.gate1[i](S, Xh, gin))
        J = torch.cat(zs, dim=-1)
        if self.gate2 is not None:
            h = self.gate2.weights(J)
            J = torch.cat([h[..., :1] * zs[0], h[..., 1:] * zs[1]], dim=-1)
        return self.heads(self.joint(J))
