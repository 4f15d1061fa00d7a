"""RJCMA — Recursive Joint Cross-Modal Attention, audio + visual + text (Praveen & Alam,
CVPRW 2024 / ABAW6).

Forward (per sample, L = window frames, one token per frame): per-modality causal TCN (kernel 5,
4 levels, dilation 2^i) → BatchNorm1d → JCA-v2 co-attention over {v, a, t} (D = sum of the TCN
widths) → concat (L, D) → Linear D→256 → BatchNorm → LeakyReLU → Linear 256→2 → tanh.

Names:

* ``rjcma`` — the authors' released configuration: **no query projection** (the code computes
  ``J W_q`` and then uses the raw joint J as query), **two stacked layers with separate weights**
  (the code's "recursion"), TCN widths visual 256 / audio 128 / text 128 (the only widths the
  released fusion layer accepts: D = 512), 300-frame windows with hop 200; it trains with the
  authors' recipe (docs/recipes.md: Adam lr 1e-5, wd 1e-3, batch 12, the per-epoch warm-up sawtooth,
  plateau and restarts, per-window CCC loss, best weights reloaded every epoch).
* ``rjcma-shared`` — avpipe's variant following the paper's formulation: query projection on and
  one weight-shared layer applied twice.

Deviations from the released code, each deliberate:

* **TCN widths** — the committed configs disagree with the fusion layer (the repo does not run as
  committed); 256/128/128 are the widths the fusion layer implies. Configurable via ``channels``.
* **Outputs** — one network per dimension in the code; one trunk with 2 outputs here.
* **Backbones** — gradually released (fine-tuned) during training in the code; frozen cached
  features here (not reproducible on a cache; expect lower numbers).
* **Training** — the authors' recipe by default; ``--recipe avpipe`` trains with avpipe's
  (batch-flattened CCC, linear warm-up, no best-weights reload): docs/recipes.md.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel, ModelInfo
from avpipe.fusion.models.blocks import TCN, RecursiveJointAttention, xavier_

DEFAULT_CHANNELS = {"visual": [256] * 4, "audio": [128] * 4, "text": [128] * 4}


@register_model
class RJCMA(FusionModel):
    name = "rjcma"
    modalities = ("visual", "audio", "text")
    window_fixed = True
    train_defaults = {"optimizer": "adam", "lr": 1e-5, "weight_decay": 1e-3, "schedule": "warmup_plateau",
                      "warmup_epochs": 5, "epochs": 100, "batch_size": 12, "patience": 50,
                      "window": 300, "hop": 200, "clip_len": 1}
    info = ModelInfo(
        paper="Praveen & Alam, Recursive Joint Cross-Modal Attention for Multimodal Fusion in Dimensional "
              "Emotion Recognition, CVPRW 2024 (ABAW6), arXiv 2403.13659",
        code="causal TCNs + BatchNorm, JCA-v2 over {v,a,t} without query projection, 2 unshared layers, "
             "head Linear-BN-LeakyReLU-Linear-tanh, 300-frame windows hop 200; training recipe (docs/recipes.md)",
        ours="TCN widths 256/128/128 (the committed configs do not run), one trunk for V+A, frozen cached "
             "features (no gradual backbone release)",
        summary="recursive joint cross-modal attention, audio+visual+text (authors' code)")

    def __init__(self, dims: Mapping[str, int], window: int, channels: Mapping[str, list[int]] | None = None,
                 kernel: int = 5, tcn_dropout: float = 0.1, iterations: int = 2, shared: bool = False,
                 dropout: float = 0.6, use_query_proj: bool = False, head_hidden: int = 256,
                 clip_len: int = 1) -> None:
        super().__init__(dims, window, clip_len)
        ch = {**DEFAULT_CHANNELS, **(channels or {})}
        self.tcn = nn.ModuleDict({m: TCN(self.dims[m], list(ch[m]), kernel, tcn_dropout) for m in self.modalities})
        self.bn = nn.ModuleDict({m: nn.BatchNorm1d(self.tcn[m].out_dim) for m in self.modalities})
        widths = [self.tcn[m].out_dim for m in self.modalities]
        self.attn = RecursiveJointAttention(widths, self.tokens, iterations, shared, dropout, use_query_proj)
        D = sum(widths)
        self.fc1, self.bn_head, self.fc2 = nn.Linear(D, head_hidden), nn.BatchNorm1d(head_hidden), nn.Linear(head_hidden, 2)
        xavier_(self.fc1)
        xavier_(self.fc2)

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        xs = []
        for m, t in zip(self.modalities, self.inputs(x, mask, self.modalities)):
            h = self.tcn[m](t)
            xs.append(self.bn[m](h.transpose(1, 2)).transpose(1, 2))
        h = torch.cat(self.attn(xs), dim=-1)
        h = self.fc1(h)
        h = F.leaky_relu(self.bn_head(h.transpose(1, 2)).transpose(1, 2))
        return torch.tanh(self.fc2(h))


@register_model
class RJCMAShared(RJCMA):
    name = "rjcma-shared"
    preset = {"use_query_proj": True, "shared": True}
    info = ModelInfo(
        paper=RJCMA.info.paper,
        code="everything of rjcma except the two options below",
        ours="query projection used (Q = J W_q, as the A-V repos and the paper's formulation) and one "
             "weight-shared layer applied twice (the paper's recursion)",
        summary="avpipe variant of rjcma: query projection + weight-shared recursion")
