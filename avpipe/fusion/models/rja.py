"""RJA — Recursive Joint Attention with LSTMs (Praveen et al., ICASSP 2023).

Forward (per sample, L tokens): L2-normalise both streams → audio BLSTM d_a→h; visual Linear
d_v→h (the code's audio-guided spatial attention reduces to a Linear on pooled face embeddings:
one spatial position, attention weight 1) → visual BLSTM h→h → JCA-v2 (dense co-attention) on
{v, a} → concat (L, 2h) → joint BLSTM 2h→h (dropout 0) → two heads h→128→1 (no tanh).

Names:

* ``rja`` — the authors' released configuration: **one** co-attention layer (the released code's
  ``num_seq`` = 1, although the paper describes a recursion), query projection on, 512-frame
  windows cut into 16 clips of 32 frames, Adam with the hard-coded 1e-3 ×0.8/2-epoch schedule,
  batch 64, 50 epochs.
* ``rja-shared`` — avpipe's reading of the paper's recursion: the attended features are fed back
  into the *same* co-attention layer ``iterations`` = 2 times (weight-shared). Not in the released
  code; its own name so that ``rja`` stays comparable with the authors' numbers.

Other deviations: two scalar heads on one trunk as in the code; a clip token is the mean of the
clip's valid cached per-frame rows (the code: an R(2+1)D feature of 8 frames of the clip, labelled
with the clip's last frame), its prediction given to every frame of the clip.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel, ModelInfo
from avpipe.fusion.models.blocks import BLSTM, RecursiveJointAttention, VAHeads, xavier_

#: the Praveen A-V repos (RJA, DCA, T-BIOM JCA): effective lr 1e-3 then ×0.8 every 2 epochs after
#: epoch 5; batch 64; 512-frame windows of 16 clips × 32 frames.
PRAVEEN_AV_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                       "epochs": 50, "batch_size": 64, "window": 512, "hop": 256, "clip_len": 32}


@register_model
class RJA(FusionModel):
    name = "rja"
    modalities = ("visual", "audio")
    window_fixed = True
    train_defaults = dict(PRAVEEN_AV_DEFAULTS)
    info = ModelInfo(
        paper="Praveen, Granger, Cardinal, Recursive Joint Attention for Audio-Visual Fusion in "
              "Regression-Based Emotion Recognition, ICASSP 2023, arXiv 2304.07958",
        code="L2 norm, BLSTMs with learned initial states and residual embedding, one JCA-v2 layer with "
             "query projection, joint BLSTM, two heads, Xavier init, L=16 clip tokens of 32 frames, schedule",
        ours="visual Linear instead of the audio-guided spatial attention (pooled embeddings), clip token = "
             "mean of cached per-frame rows",
        summary="recursive joint attention + BLSTMs, audio+visual (authors' code: 1 layer)")

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 512,
                 iterations: int = 1, shared: bool = False, dropout: float = 0.6,
                 lstm_dropout: float = 0.1, use_query_proj: bool = True, l2norm: bool = True,
                 clip_len: int = 1) -> None:
        super().__init__(dims, window, clip_len)
        self.l2norm = l2norm
        self.v_in = nn.Linear(self.dims["visual"], hidden)
        xavier_(self.v_in)
        self.v_lstm = BLSTM(hidden, hidden, dropout=lstm_dropout)
        self.a_lstm = BLSTM(self.dims["audio"], hidden, dropout=lstm_dropout)
        self.attn = RecursiveJointAttention([hidden, hidden], self.tokens, iterations, shared, dropout,
                                            use_query_proj)
        self.joint = BLSTM(2 * hidden, hidden, dropout=0.0)
        self.heads = VAHeads(hidden, dropout=dropout)

    def encode(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        v, a = self.inputs(x, mask, ("visual", "audio"))
        if self.l2norm:
            v, a = F.normalize(v, dim=-1), F.normalize(a, dim=-1)
        return [self.v_lstm(self.v_in(v)), self.a_lstm(a)]

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        v, a = self.attn(self.encode(x, mask))
        return self.heads(self.joint(torch.cat([v, a], dim=-1)))


@register_model
class RJAShared(RJA):
    name = "rja-shared"
    preset = {"iterations": 2, "shared": True}
    info = ModelInfo(
        paper=RJA.info.paper,
        code="everything of rja except the recursion",
        ours="weight-shared recursion: one JCA-v2 layer applied iterations=2 times (the paper's description; "
             "the released code has one layer)",
        summary="avpipe variant of rja: weight-shared recursion, 2 iterations")
