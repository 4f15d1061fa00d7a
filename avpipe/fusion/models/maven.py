"""MAVEN — Multi-modal Attention for Valence-Arousal Emotion Network (Ahire et al., CVPRW 2025 /
ABAW8). docs/models.md#maven.

Forward (per sample, T = window; all three streams are per-frame cache rows):

1. modality encoders: Linear d_m→d (bias) per modality;
2. six cross-modal pathways, each its own ``heads``-head attention (query = first modality,
   key/value = second, padding/invalid keys masked): v→a, v→t, a→v, a→t, t→v, t→a;
3. enhanced_m = LayerNorm(Dropout((x_m + cross₁ + cross₂) / 3)) with one shared LayerNorm;
4. self-attention refinement per modality (paper: LayerNorm(MHA(F) + F); absent in the code);
5. concat (T, 3d) → Linear 3d→e → transformer encoder stack(s) → MLP e→512→256→head;
6. polar head (circumplex): direction from a 2-vector (wrap-free) and intensity I ∈ [0, √2],
   output (v, a) = I·(cos θ, sin θ).

Divergence decisions (docs/models.md#maven-decisions):

* **Encoders** — paper: BEiT₂(BEiT₁(x)) sequential; code: two BEiT-base stacks in parallel,
  concatenated. Default: paper (sequential, ``layers`` total); ``code_faithful=True`` = two parallel
  stacks and no self-attention refinement (step 4). No BEiT initialisation (no weights on a cache
  of arbitrary features); stack size is configurable (defaults far smaller than BEiT-base).
* **Granularity** — code: audio/text one vector per transcript segment; here per-frame cache rows,
  so every pathway is genuine attention over the window (the code's v→a / v→t are degenerate).
* **Per-frame predictions** (code) rather than the paper's temporal pooling (one per segment).
* **Polar head and ±π wrap** — the code regresses θ = atan2(a, v) with MSE, discontinuous at
  θ = ±π (negative valence, arousal ≈ 0). We never regress θ: the head emits an unnormalised 2-vector
  whose direction is (cos θ, sin θ) and a separate intensity, and the training loss acts on
  (v, a) (CCC like every model) plus a wrap-free auxiliary polar loss (1 − cos Δθ, (ΔI)²) weighted
  0.1 (``aux_losses``; metrics.polar_loss). Paper eq. 32 says MSE; the CCC loss is the avpipe default.
* **Training** — README: Adam 1e-4, wd 1e-4, plateau (0.1, 5) — used as defaults; the code's
  re-initialisation on non-improvement is not reproduced.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel

PATHWAYS = (("visual", "audio"), ("visual", "text"), ("audio", "visual"), ("audio", "text"),
            ("text", "visual"), ("text", "audio"))


def key_padding(mask: torch.Tensor) -> torch.Tensor:
    """MHA key_padding_mask (True = ignore); rows with no valid key attend everywhere (to zeros)
    instead of producing NaN."""
    kp = ~mask
    return kp & ~kp.all(dim=1, keepdim=True)


@register_model
class MAVEN(FusionModel):
    name = "maven"
    modalities = ("visual", "audio", "text")
    train_defaults = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "schedule": "plateau",
                      "epochs": 100, "batch_size": 8}
    aux_losses = {"polar": 0.1}

    def __init__(self, dims: Mapping[str, int], window: int, d: int = 512, heads: int = 2,
                 attn_dropout: float = 0.1, embed: int = 768, layers: int = 2, ff: int = 1024,
                 code_faithful: bool = False) -> None:
        super().__init__(dims, window)
        self.code_faithful = code_faithful
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], d) for m in self.modalities})
        self.cross = nn.ModuleDict({f"{q}2{k}": nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True)
                                    for q, k in PATHWAYS})
        self.drop = nn.Dropout(attn_dropout)
        self.norm = nn.LayerNorm(d)  # one shared LayerNorm (code)
        self.refine = None if code_faithful else nn.ModuleDict(
            {m: nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True) for m in self.modalities})
        self.refine_norm = None if code_faithful else nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        self.fuse = nn.Linear(3 * d, embed)

        def stack(n: int) -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(embed, 8 if embed % 8 == 0 else 1, ff, dropout=0.1,
                                               batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)

        # code: two stacks in parallel (concat → 2e); paper: sequential (one deep stack → e).
        self.encoders = nn.ModuleList([stack(layers), stack(layers)]) if code_faithful \
            else nn.ModuleList([stack(layers)])
        e_out = embed * len(self.encoders)
        self.mlp = nn.Sequential(nn.Linear(e_out, 512), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 3))

    def forward(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feats = {m: self.proj[m](t) for m, t in zip(self.modalities, self.inputs(x, mask, self.modalities))}
        kp = {m: key_padding(mask[m]) for m in self.modalities}
        cross: dict[str, list[torch.Tensor]] = {m: [] for m in self.modalities}
        for q, k in PATHWAYS:
            out, _ = self.cross[f"{q}2{k}"](feats[q], feats[k], feats[k], key_padding_mask=kp[k], need_weights=False)
            cross[q].append(out)
        enh = {m: self.norm(self.drop((feats[m] + cross[m][0] + cross[m][1]) / 3)) for m in self.modalities}
        if self.refine is not None:
            for m in self.modalities:
                r, _ = self.refine[m](enh[m], enh[m], enh[m], key_padding_mask=kp[m], need_weights=False)
                enh[m] = self.refine_norm[m](r + enh[m])
        h = self.fuse(torch.cat([enh[m] for m in self.modalities], dim=-1))
        any_valid = torch.stack([mask[m] for m in self.modalities]).any(0)
        pad = key_padding(any_valid)
        h = torch.cat([enc(h, src_key_padding_mask=pad) for enc in self.encoders], dim=-1)
        return polar_to_va(self.mlp(h))


def polar_to_va(out: torch.Tensor) -> torch.Tensor:
    """(B, T, 3) raw head → (v, a): direction = normalised first two outputs (no atan2, so no ±π
    wrap), intensity = √2·sigmoid(third) (the corner of [-1, 1]² has I = √2)."""
    direction = F.normalize(out[..., :2].float(), dim=-1, eps=1e-6)
    intensity = torch.sigmoid(out[..., 2:].float()) * (2 ** 0.5)
    return (direction * intensity).to(out.dtype)
