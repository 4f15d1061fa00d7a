"""MAVEN — Multi-modal Attention for Valence-Arousal Emotion Network (Ahire et al., CVPRW 2025 /
ABAW8, arXiv 2503.12623).

Forward (one sample = one sequence of T frames):

1. modality encoders: Linear d_m→d (bias) per modality;
2. six cross-modal pathways, each its own ``heads``-head attention (query = first modality,
   key/value = second, padding/invalid keys masked): v→a, v→t, a→v, a→t, t→v, t→a;
3. enhanced_m = LayerNorm(Dropout((x_m + cross₁ + cross₂) / 3)) with one shared LayerNorm;
4. (``maven-paper`` only) self-attention refinement per modality, LayerNorm(MHA(F) + F);
5. concat (L, 3d) → Linear 3d→e → transformer encoder stack(s) → MLP e→512→256→head.

Names:

* ``maven`` — the authors' released code (``Train_BEiT``): **one sequence per transcript
  segment** (``tokens="segment"``). The sample is one segment: visual stays per frame (T tokens),
  audio and text are **one token each**, the mean of the segment's valid cached rows (the authors
  encode the segment once: HuBERT on its first second, RoBERTa on its words). So v→a and v→t
  attend over one key (softmax = 1: every frame receives the projected audio/text value), a→v and
  t→v pool the segment's frames, a→t and t→a join the two tokens; the enhanced audio and text
  tokens are broadcast over the T frames before the fusion Linear, and the MLP emits (v, a) per
  frame. With ``input_standardise`` each tensor of the segment (frames × dims, the audio vector,
  the text vector) gets N(0, σ²) noise while training and is standardised by its own scalar mean
  and std, as the code does per segment. Two encoder stacks run **in parallel** on the same input
  and are concatenated; no refinement step. The trainer makes every window one transcript segment
  (:mod:`avpipe.fusion.segments`); a window given here is taken as one segment.
* ``maven-frames`` — avpipe's per-frame front end (``tokens="frame"``): audio and text are
  per-frame rows, so every pathway attends over the window. A run recorded as ``maven`` without a
  ``tokens`` model option trained this front end and is read back as ``maven-frames``.
* ``maven-paper`` — the paper's description on per-frame rows: BEiT₂(BEiT₁(x)) **sequential**
  (one stack of ``layers``), the refinement step 4, and a polar (circumplex) head: the head emits
  an unnormalised 2-vector whose direction is (cos θ, sin θ) and an intensity I ∈ [0, √2], output
  I·(cos θ, sin θ), trained with a wrap-free auxiliary polar loss (1 − cos Δθ, (ΔI)²) weighted 0.1.
  The code regresses θ = atan2(a, v) with MSE, which jumps at θ = ±π; we never regress θ.

Deviations from the released code, each deliberate:

* **Encoder layers** — the code's encoders are BEiT-base (12 layers each, initialised from
  ``microsoft/beit-base-patch16-224-pt22k``); here plain pre-norm transformer layers, randomly
  initialised, ``layers`` = 2 per stack by default (no BEiT weights for arbitrary cached features,
  and a 24-layer encoder does not train on a CPU). They follow BEiT's layer: **GELU** feed-forward
  activation and **LayerNorm eps 1e-12** (``activation``, ``norm_eps``; PyTorch's defaults are ReLU
  and 1e-5), but without BEiT's layer-scale and relative position bias.
* **Segment vectors** — the code encodes the segment's audio/text once; ``maven`` pools the cached
  per-frame rows of the segment (with the ``maven`` preset's ``speech_segments`` and segment-unit
  ``text`` stages those rows already are the segment's vector).
* **Padding** — the code pads a batch's segments with zeros it attends to; here padded frames are
  masked out of every attention.
* **Loss** — the code's CCC term is computed with ``.item()`` (no gradient), so it trains on MSE:
  the authors' recipe trains on the mean squared error (``mse_mean``); ``--recipe avpipe`` on the CCC.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avpipe.fusion.models import register_model
from avpipe.fusion.models.base import FusionModel, ModelInfo

PATHWAYS = (("visual", "audio"), ("visual", "text"), ("audio", "visual"), ("audio", "text"),
            ("text", "visual"), ("text", "audio"))


def key_padding(mask: torch.Tensor) -> torch.Tensor:
    """MHA key_padding_mask (True = ignore); rows with no valid key attend everywhere (to zeros)
    instead of producing NaN."""
    kp = ~mask
    return kp & ~kp.all(dim=1, keepdim=True)


TOKENS = ("segment", "frame")


def segment_tokens(x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], names: tuple[str, ...]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One token per sample for each modality in ``names``: the mean of its valid rows (B, 1, D),
    valid when the sample has any. Why: the authors' audio and text are one vector per transcript
    segment, and a sample here is one segment."""
    xs, ms = dict(x), dict(mask)
    for m in names:
        mk = mask[m].unsqueeze(-1).to(x[m].dtype)
        n = mk.sum(1, keepdim=True)
        xs[m] = (x[m] * mk).sum(1, keepdim=True) / n.clamp_min(1.0)
        ms[m] = n.squeeze(-1) > 0
    return xs, ms


@register_model
class MAVEN(FusionModel):
    name = "maven"
    modalities = ("visual", "audio", "text")
    train_defaults = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "schedule": "plateau",
                      "epochs": 100, "batch_size": 8, "window": 300, "hop": 200, "clip_len": 1}
    #: ``tokens="segment"``: a sample is one transcript segment; the trainer reads the segments from the
    #: cached ``asr`` stage (:mod:`avpipe.fusion.segments`) because this option is recorded with the run
    preset = {"code_faithful": True, "head": "va", "tokens": "segment"}
    info = ModelInfo(
        paper="Ahire et al., MAVEN: Multi-modal Attention for Valence-Arousal Emotion Network, CVPRW 2025 "
              "(ABAW8), arXiv 2503.12623",
        code="one sequence per transcript segment: per-frame visual, one audio and one text token per segment, "
             "six 2-head cross-attention pathways, shared LayerNorm, fusion Linear, two encoder stacks in "
             "parallel, MLP 512-256 with dropout 0.5/0.3 to (v,a) per frame, per-segment standardisation",
        ours="small randomly initialised GELU encoder stacks (12 heads, FF 3072, as BEiT-base) instead of two "
             "12-layer BEiT-base; audio/text tokens pooled from the cached per-frame rows of the segment; "
             "padding masked",
        summary="multimodal cross-attention + transformer encoders over transcript segments, audio+visual+text "
                "(authors' code)")

    def __init__(self, dims: Mapping[str, int], window: int, d: int = 512, heads: int = 2,
                 attn_dropout: float = 0.1, embed: int = 768, layers: int = 2, ff: int = 1024,
                 code_faithful: bool = True, head: str = "va", activation: str = "gelu",
                 norm_eps: float = 1e-12, clip_len: int = 1, enc_heads: int | None = None,
                 enc_dropout: float = 0.1, input_standardise: bool = False, input_noise: float = 0.0,
                 tokens: str = "frame") -> None:
        super().__init__(dims, window, clip_len)
        if tokens not in TOKENS:
            raise ValueError(f"tokens must be one of {', '.join(TOKENS)}, got {tokens!r}")
        self.tokens = tokens
        # the authors' recipe (avpipe.fusion.recipes): BEiT-base's 12 heads, FF 3072, dropout 0, and
        # its inputs standardised per sequence and modality after N(0, 0.01²) noise
        self.input_standardise, self.input_noise = bool(input_standardise), float(input_noise)
        if head not in ("va", "polar"):
            raise ValueError("head must be 'va' or 'polar'")
        self.code_faithful, self.head = code_faithful, head
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], d) for m in self.modalities})
        self.cross = nn.ModuleDict({f"{q}2{k}": nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True)
                                    for q, k in PATHWAYS})
        self.drop = nn.Dropout(attn_dropout)
        self.norm = nn.LayerNorm(d)  # one shared LayerNorm (code)
        self.refine = None if code_faithful else nn.ModuleDict(
            {m: nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True) for m in self.modalities})
        self.refine_norm = None if code_faithful else nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        self.fuse_in = nn.Linear(3 * d, embed)

        def stack(n: int) -> nn.TransformerEncoder:
            nh = enc_heads if enc_heads is not None else (8 if embed % 8 == 0 else 1)
            layer = nn.TransformerEncoderLayer(embed, nh, ff, dropout=enc_dropout,
                                               activation=activation, layer_norm_eps=norm_eps,
                                               batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)

        # code: two stacks in parallel (concat → 2e); paper: sequential (one deep stack → e).
        self.encoders = nn.ModuleList([stack(layers), stack(layers)]) if code_faithful \
            else nn.ModuleList([stack(layers)])
        e_out = embed * len(self.encoders)
        self.mlp = nn.Sequential(nn.Linear(e_out, 512), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(256, 3 if head == "polar" else 2))

    def standardise(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The MAVEN code's input normalisation, per sample and modality: x + N(0, σ²) noise while
        training (σ = ``input_noise``), then (x − mean) / (std + 1e-8) with one scalar mean and
        unbiased std over the valid rows (the code: over one transcript segment, which a sample is
        under ``tokens="segment"``; ``maven-frames``: one window)."""
        out = {}
        for m, t in x.items():
            mk = mask[m].unsqueeze(-1).to(t.dtype) if m in mask else torch.ones_like(t[..., :1])
            if self.training and self.input_noise > 0:
                t = t + torch.randn_like(t) * self.input_noise
            n = (mk.sum((1, 2)) * t.shape[-1]).clamp_min(2.0)  # values per sample
            mu = (t * mk).sum((1, 2)) / n
            d = (t - mu[:, None, None]) * mk
            sd = ((d * d).sum((1, 2)) / (n - 1)).sqrt()
            out[m] = d / (sd[:, None, None] + 1e-8)
        return out

    def fuse(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
        h, pad = self.front_end(x, mask)
        h = torch.cat([enc(h, src_key_padding_mask=pad) for enc in self.encoders], dim=-1)
        out = self.mlp(h)
        return polar_to_va(out) if self.head == "polar" else out

    def front_end(self, x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Steps 1–4 and the fusion Linear: (B, T, embed) per frame, and the encoders' key padding
        (None: nothing to mask). A method of its own so that the front end can be timed alone."""
        xs, ms = dict(zip(self.modalities, self.inputs(x, mask, self.modalities))), dict(mask)
        any_valid = torch.stack([mask[m] for m in self.modalities]).any(0)  # frames of the sequence
        if self.tokens == "segment":  # audio and text: one vector per segment, before the noise
            xs, ms = segment_tokens(xs, ms, ("audio", "text"))
        if self.input_standardise:
            xs = self.standardise(xs, ms)
        feats = {m: self.proj[m](xs[m]) for m in self.modalities}
        # a single key (a segment token) is never masked: valid, or invalid and then attended anyway
        kp = {m: None if feats[m].shape[1] == 1 else key_padding(ms[m]) for m in self.modalities}
        cross: dict[str, list[torch.Tensor]] = {m: [] for m in self.modalities}
        for q, k in PATHWAYS:
            out, _ = self.cross[f"{q}2{k}"](feats[q], feats[k], feats[k], key_padding_mask=kp[k], need_weights=False)
            cross[q].append(out)
        enh = {m: self.norm(self.drop((feats[m] + cross[m][0] + cross[m][1]) / 3)) for m in self.modalities}
        if self.refine is not None:
            for m in self.modalities:
                r, _ = self.refine[m](enh[m], enh[m], enh[m], key_padding_mask=kp[m], need_weights=False)
                enh[m] = self.refine_norm[m](r + enh[m])
        T = enh["visual"].shape[1]
        h = self.fuse_in(torch.cat([enh[m].expand(-1, T, -1) for m in self.modalities], dim=-1))
        pad = key_padding(any_valid)
        if self.tokens == "segment" and not bool(pad.any()):  # a batch of whole segments: nothing to mask
            return h, None
        return h, pad


@register_model
class MAVENFrames(MAVEN):
    name = "maven-frames"
    preset = {"code_faithful": True, "head": "va", "tokens": "frame"}
    info = ModelInfo(
        paper=MAVEN.info.paper,
        code="the cross-attention front end, encoders and head of maven",
        ours="per-frame audio and text rows instead of one token per transcript segment, fixed windows: every "
             "pathway attends over the window (what maven built before segment tokens)",
        summary="avpipe variant of maven: per-frame audio/text tokens over fixed windows")


@register_model
class MAVENPaper(MAVEN):
    name = "maven-paper"
    preset = {"code_faithful": False, "head": "polar", "tokens": "frame"}
    aux_losses = {"polar": 0.1}
    info = ModelInfo(
        paper=MAVEN.info.paper,
        code="the cross-attention front end of maven",
        ours="the paper's sequential encoders and self-attention refinement, wrap-free polar head with an "
             "auxiliary polar loss (0.1)",
        summary="avpipe variant of maven: the paper's description, polar head")


def polar_to_va(out: torch.Tensor) -> torch.Tensor:
    """(B, T, 3) raw head → (v, a): direction = normalised first two outputs (no atan2, so no ±π
    wrap), intensity = √2·sigmoid(third) (the corner of [-1, 1]² has I = √2)."""
    direction = F.normalize(out[..., :2].float(), dim=-1, eps=1e-6)
    intensity = torch.sigmoid(out[..., 2:].float()) * (2 ** 0.5)
    return (direction * intensity).to(out.dtype)
