"""RJCMA — Recursive Joint Cross-Modal Attention, audio + visual + text (Praveen & Alam,
CVPRW 2024 / ABAW6). docs/models.md#rjcma.

Forward (per sample, T = window): per-modality causal TCN (k = 5, 4 levels) →
BatchNorm1d → recursive JCA-v2 over {v, a, t} (D = sum of TCN widths) → concat (T, D) →
Linear D→256 → BatchNorm → LeakyReLU → Linear 256→2 → tanh.

Divergence decisions (docs/models.md#rjcma-decisions):

* **TCN widths** — the committed configs disagree with the fusion layer; we use the widths the
  fusion layer implies: visual 256, audio 128, text 128 (D = 512), 4 levels each, configurable via
  ``channels={"visual": [...], ...}``.
* **Query projection** — the code computes ``J W_q`` and then uses raw J; default
  ``use_query_proj=True`` (the formulation of the papers and the A-V repos); False = the code.
* **Recursion** — code: 2 stacked layers with separate weights; paper eq. (11): the attended
  features are fed back into the fusion model. Default: weight-shared recursion, 2 iterations
  (as for RJA); ``shared=False`` = the code.
* **Outputs** — one network per dimension in the code; one trunk with 2 outputs here.
* **Backbones** — gradually released during training in the code; frozen cached features here
  (not reproducible on a cache; expect lower numbers).
* Training defaults from the code: Adam lr 1e-5, wd 1e-3, batch 12, 5-epoch warm-up then plateau
  on validation CCC (patience 5, factor 0.1); per-window CCC loss is available as ``loss=ccc_window``
  but the batch-flattened loss is the avpipe default for every model (docs/models.md#losses).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel
from avpipe.fusion.models.blocks import TCN, RecursiveJointAttention, xavier_

DEFAULT_CHANNELS = {"visual": [256] * 4, "audio": [128] * 4, "text": [128] * 4}


@register_model
class RJCMA(FusionModel):
    name = "rjcma"
    modalities = ("visual", "audio", "text")
    window_fixed = True
    train_defaults = {"optimizer": "adam", "lr": 1e-5, "weight_decay": 1e-3, "schedule": "warmup_plateau",
                      "warmup_epochs": 5, "epochs": 100, "batch_size": 12}

    def __init__(self, dims: Mapping[str, int], window: int, channels: Mapping[str, list[int]] | None = None,
                 kernel: int = 5, tcn_dropout: float = 0.1, iterations: int = 2, shared: bool = True,
                 dropout: float = 0.6, use_query_proj: bool = True, head_hidden: int = 256) -> None:
        super().__init__(dims, window)
        ch = {**DEFAULT_CHANNELS, **(channels or {})}
        self.tcn = nn.ModuleDict({m: TCN(self.dims[m], list(ch[m]), kernel, tcn_dropout) for m in self.modalities})
        self.bn = nn.ModuleDict({m: nn.BatchNorm1d(self.tcn[m].out_dim) for m in self.modalities})
        widths = [self.tcn[m].out_dim for m in self.modalities]
        self.attn = RecursiveJointAttention(widths, window, iterations, shared, dropout, use_query_proj)
        D = sum(widths)
        self.fc1, self.bn_head, self.fc2 = nn.Linear(D, head_hidden), nn.BatchNorm1d(head_hidden), nn.Linear(head_hidden, 2)
        xavier_(self.fc1)
        xavier_(self.fc2)

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = []
        for m, t in zip(self.modalities, self.inputs(x, mask, self.modalities)):
            h = self.tcn[m](t)
            xs.append(self.bn[m](h.transpose(1, 2)).transpose(1, 2))
        h = torch.cat(self.attn(xs), dim=-1)
        h = self.fc1(h)
        h = F.leaky_relu(self.bn_head(h.transpose(1, 2)).transpose(1, 2))
        return torch.tanh(self.fc2(h))
