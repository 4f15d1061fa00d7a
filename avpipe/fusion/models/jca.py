"""JCA — Joint Cross-Attention (Praveen et al., CVPRW 2022 / ABAW3). docs/models.md#jca.

Shapes (per sample): visual/audio (T, d_m) → Linear d_m→h (bias) → JCA-v1 block (docs/models.md#jca-v1, L = T,
k = 32, D = 2h) → concat [X̂_a | X̂_v] (T, 2h) → Linear 2h→h → Dropout 0.6 → Linear h→2.

Divergence decisions (docs/models.md#jca-decisions):

* **Regressor input** — the published ABAW3 code leaves the regressor at 640 inputs while the
  concatenation it feeds is 256 (does not run); the fixed concat of *attended* audio + *attended*
  visual (GitHub issue #4) is used: input 2h.
* **Two outputs** — the code trains one model per dimension; we predict (valence, arousal) from one
  trunk (same loss, V + A) so every model shares one signature. One model per dimension = train
  twice and keep one column.
* **Tokens** — the code's tokens are 32-frame clips (L = 8) from frozen I3D+TCN / ResNet-18; ours
  are the cache's per-frame rows, L = the training window. The L×L weights then mix time over the
  whole window (the block's only temporal model).
* **No activation between the two regressor Linear layers** (as in the code) unless
  ``head_activation=True``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel
from avpipe.fusion.models.blocks import JCAv1, xavier_


@register_model
class JCA(FusionModel):
    name = "jca"
    modalities = ("audio", "visual")
    window_fixed = True
    # docs/models.md#jca-released-code: Adam 1e-3, ×0.8 every 2 epochs after epoch 5, 30 epochs, batch 96.
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                      "epochs": 30, "batch_size": 96}

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 128, k: int = 32,
                 dropout: float = 0.6, head_activation: bool = False) -> None:
        super().__init__(dims, window)
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], hidden) for m in self.modalities})
        self.block = JCAv1([hidden, hidden], window, k)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden),
                                  nn.ReLU() if head_activation else nn.Identity(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 2))
        xavier_(self.proj)
        xavier_(self.head)

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = [self.proj[m](t) for m, t in zip(self.modalities, self.inputs(x, mask, self.modalities))]
        return self.head(torch.cat(self.block(xs), dim=-1))
