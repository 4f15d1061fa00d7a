"""IACA — Inconsistency-Aware Cross-Attention (Praveen & Alam, 2024), and DCA, its public parent.

**IACA has no public code.** The abstract confirms only "a two-stage gating mechanism" that
selects between cross-attended and un-attended features depending on the complementarity of
the modalities; ``iaca`` is avpipe's **reconstruction**, built on the public code of DCA (Dynamic
Cross-Attention, ICME 2024, arXiv 2403.19554), which is its stage-1 mechanism:

1. per-modality encoders as in RJA (L2 norm, visual Linear, BLSTMs);
2. cross-attention: JCA-v2 on {v, a}, 2 stacked layers (the DCA code) → X̂_v, X̂_a;
3. self branch S_m: the un-attended features (``self_branch="identity"``, = DCA) or single-head
   self-attention over time (``"attention"``);
4. stage-1 gate per modality: ``g_m = softmax([X̂_m | S_m] W_1 / τ)``,
   ``Z_m = ReLU(g0·S_m + g1·X̂_m)`` (DCA feeds only X̂_m to the gate, ``gate_input="attended"``;
   ``iaca`` feeds both, ``gate_input="both"``);
5. stage-2 gate across modalities: ``h = softmax([Z_v | Z_a] W_2 / τ)``, ``F = [h0 Z_v | h1 Z_a]``
   (lets the model down-weight a corrupted or missing audio stream); absent in DCA;
6. joint BLSTM 2h→h → V/A heads. τ = 0.1.

``dca`` is the DCA released configuration (identity self branch, gate on the attended features,
no stage 2, 2 unshared co-attention layers with query projection, AdamW wd 1e-5, 512-frame windows
of 16 clips × 32 frames). ``iaca`` = the same trunk with both gates; its defaults are DCA's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import ModelInfo
from avpipe.fusion.models.blocks import DCAGate
from avpipe.fusion.models.rja import PRAVEEN_AV_DEFAULTS, RJA


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
    # the DCA code: AdamW wd 1e-5, the hard-coded 1e-3 ×0.8/2-epoch schedule, 100 epochs.
    train_defaults = {**PRAVEEN_AV_DEFAULTS, "optimizer": "adamw", "weight_decay": 1e-5, "epochs": 100}
    info = ModelInfo(
        paper="Praveen & Alam, Inconsistency-Aware Cross-Attention for Audio-Visual Fusion in "
              "Dimensional Emotion Recognition, 2024, arXiv 2405.12853",
        code="",
        ours="RECONSTRUCTION (no public code): the DCA trunk with a stage-1 gate on [attended | un-attended] "
             "and a stage-2 gate across modalities, tau=0.1, DCA's training defaults",
        summary="inconsistency-aware cross-attention, audio+visual (reconstruction: no public code)")

    def __init__(self, dims: Mapping[str, int], window: int, hidden: int = 512, layers: int = 2,
                 tau: float = 0.1, self_branch: str = "identity", gate_input: str = "both",
                 stage2: bool = True, dropout: float = 0.6, lstm_dropout: float = 0.1,
                 use_query_proj: bool = True, clip_len: int = 1) -> None:
        super().__init__(dims, window, hidden=hidden, iterations=layers, shared=False,
                         dropout=dropout, lstm_dropout=lstm_dropout, use_query_proj=use_query_proj,
                         clip_len=clip_len)
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

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = self.encode(x, mask)
        att = self.attn(xs)
        zs = []
        for i, (m, X, Xh) in enumerate(zip(("visual", "audio"), xs, att)):
            S = self.self_attn[i](X, mask[m]) if self.self_attn is not None else X
            gin = torch.cat([Xh, S], dim=-1) if self.gate_input == "both" else Xh
            zs.append(self.gate1[i](S, Xh, gin))
        J = torch.cat(zs, dim=-1)
        if self.gate2 is not None:
            h = self.gate2.weights(J)
            J = torch.cat([h[..., :1] * zs[0], h[..., 1:] * zs[1]], dim=-1)
        return self.heads(self.joint(J))


@register_model
class DCA(IACA):
    name = "dca"
    preset = {"self_branch": "identity", "gate_input": "attended", "stage2": False, "layers": 2}
    info = ModelInfo(
        paper="Praveen & Alam, Cross-Attention is Not Always Needed: Dynamic Cross-Attention for "
              "Audio-Visual Dimensional Emotion Recognition, ICME 2024, arXiv 2403.19554",
        code="RJA trunk with 2 unshared JCA-v2 layers, per-modality softmax gate (tau=0.1) on the attended "
             "features choosing attended vs un-attended, AdamW wd 1e-5, L=16 clip tokens of 32 frames",
        ours="as rja (visual Linear for the spatial attention, clip token = mean of cached rows)",
        summary="dynamic cross-attention, audio+visual (authors' code; the parent of iaca)")
