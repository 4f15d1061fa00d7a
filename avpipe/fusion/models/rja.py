"""RJA — Recursive Joint Attention with LSTMs (Praveen et al., ICASSP 2023). docs/models.md#rja.

Forward (per sample, T = window): L2-normalise both streams → audio BLSTM d_a→h; visual
Linear d_v→h (the audio-guided spatial attention of the code reduces to a Linear on pooled face
embeddings) → visual BLSTM h→h → recursive JCA-v2 on {v, a} → concat (T, 2h) →
joint BLSTM 2h→h (dropout 0) → two heads h→128→1 (no tanh).

Divergence decisions (docs/models.md#rja-decisions):

* **Recursion** — the paper feeds the attended features back into the *same* joint attention
  ``iterations`` times; the released code has N = 1 layer. Default: weight-shared recursion,
  ``iterations=2``; ``shared=False`` stacks separate layers, ``iterations=1`` is the code.
* **Query projection** — kept (``use_query_proj=True``), as in the A-V repos.
* **Tokens** — per-frame cached rows instead of 32-frame clips, so T = the training window.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel
from avpipe.fusion.models.blocks import BLSTM, RecursiveJointAttention, VAHeads, xavier_


@register_model
class RJA(FusionModel):
    name = "rja"
    modalities = ("visual", "audio")
    window_fixed = True
    # docs/models.md#rja-released-code: Adam, effective lr 1e-3 then ×0.8 every 2 epochs after epoch 5; batch 64; 50 epochs.
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                      "epochs": 50, "batch_size": 64}

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 512,
                 iterations: int = 2, shared: bool = True, dropout: float = 0.6,
                 lstm_dropout: float = 0.1, use_query_proj: bool = True, l2norm: bool = True) -> None:
        super().__init__(dims, window)
        self.l2norm = l2norm
        self.v_in = nn.Linear(self.dims["visual"], hidden)
        xavier_(self.v_in)
        self.v_lstm = BLSTM(hidden, hidden, dropout=lstm_dropout)
        self.a_lstm = BLSTM(self.dims["audio"], hidden, dropout=lstm_dropout)
        self.attn = RecursiveJointAttention([hidden, hidden], window, iterations, shared, dropout,
                                            use_query_proj)
        self.joint = BLSTM(2 * hidden, hidden, dropout=0.0)
        self.heads = VAHeads(hidden, dropout=dropout)

    def encode(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        v, a = self.inputs(x, mask, self.modalities)
        if self.l2norm:
            v, a = F.normalize(v, dim=-1), F.normalize(a, dim=-1)
        return [self.v_lstm(self.v_in(v)), self.a_lstm(a)]

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        v, a = self.attn(self.encode(x, mask))
        return self.heads(self.joint(torch.cat([v, a], dim=-1)))
