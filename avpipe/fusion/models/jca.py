"""JCA — Joint Cross-Attention (Praveen et al., CVPRW 2022 / ABAW3).

Shapes (per sample): visual/audio tokens (L, d_m) → Linear d_m→h (bias) → JCA-v1 block (L×L
joint weights, k = 32, D = 2h) → concat [X̂_a | X̂_v] (L, 2h) → Linear 2h→h → Dropout 0.6 →
Linear h→2.

``jca`` is the authors' released ABAW3 configuration: 256-frame windows cut into 32-frame clips
(L = 8 tokens), h = 128, Adam 1e-3 ×0.8 every 2 epochs after epoch 5, batch 96, 30 epochs.

Deviations from the released code, each deliberate:

* **Regressor input** — the released code leaves the regressor at 640 inputs while the
  concatenation it feeds is 256 (it does not run); the fixed concat of *attended* audio +
  *attended* visual (the authors' GitHub issue #4) is used: input 2h.
* **Two outputs** — the code trains one model per dimension; we predict (valence, arousal) from one
  trunk (loss V + A) so every model shares one signature. One model per dimension = train twice
  and keep one column.
* **Clip tokens** — the code's clip token is an I3D+TCN feature of 8 frames of the clip; ours is
  the mean of the clip's valid cached per-frame rows (``clip_len``), and the per-token prediction
  is given to every frame of the clip (the code labels a clip with its last frame).
* **No activation between the two regressor Linear layers** (as in the code) unless
  ``head_activation=True``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel, ModelInfo
from avpipe.fusion.models.blocks import JCAv1, xavier_


@register_model
class JCA(FusionModel):
    name = "jca"
    modalities = ("audio", "visual")
    window_fixed = True
    # released code: Adam 1e-3, ×0.8 every 2 epochs after epoch 5, 30 epochs, batch 96; 256-frame
    # windows of 8 clips × 32 frames.
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                      "epochs": 30, "batch_size": 96, "window": 256, "hop": 128, "clip_len": 32}
    info = ModelInfo(
        paper="Praveen et al., A Joint Cross-Attention Model for Audio-Visual Fusion in Dimensional "
              "Emotion Recognition, CVPRW 2022 (ABAW3), arXiv 2203.14779",
        code="JCA-v1 block (L x L joint weights, k=32, no biases, tanh/ReLU, residual), Linear 512->128 "
             "encoders, regressor without activation, L=8 clip tokens of 32 frames, optimiser and schedule",
        ours="regressor input 2h (the released 640 does not run), one trunk for V+A, clip token = mean of "
             "cached per-frame rows",
        summary="joint cross-attention, audio+visual (authors' ABAW3 configuration)")

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 128, k: int = 32,
                 dropout: float = 0.6, head_activation: bool = False, clip_len: int = 1) -> None:
        super().__init__(dims, window, clip_len)
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], hidden) for m in self.modalities})
        self.block = JCAv1([hidden, hidden], self.tokens, k)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden),
                                  nn.ReLU() if head_activation else nn.Identity(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 2))
        xavier_(self.proj)
        xavier_(self.head)

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = [self.proj[m](t) for m, t in zip(self.modalities, self.inputs(x, mask, self.modalities))]
        return self.head(torch.cat(self.block(xs), dim=-1))
