"""Batched reference modules with the layer structure of the authors' released jca, rja, dca and
rjcma modules, written from the published equations and shapes (docs/models-fusion.md), for
timing avpipe's training step against the authors' own way of computing it.

Why not the references in ``tests/fusion/test_published_equations.py``: those loop over samples
and LSTM steps to make the equations explicit, so they are hundreds of times slower than either
implementation and timing against them says nothing. These run the whole batch at once, as the
authors' modules do: clip tokens in (the authors' backbones deliver one 512-d vector per 32-frame
clip; there is no pooling in their step), their per-modality Linear layers and attention maps at
their widths, their LSTMs with learned initial states, their dropout placement (a plain
``nn.Dropout`` on each correlation map, the 1/√D scale applied to the map), and none of avpipe's
masks, clip pooling or chunking.

A reference is only a comparison if it is the same function: :func:`max_difference` maps an avpipe
model's weights into its reference (:func:`map_weights`) and compares both in float64, eval mode;
``bench_published_step.py --models jca,...`` checks that to 1e-10 before it times anything, and
``tests/benchmarks/test_reference_modules.py`` does it on tiny shapes.

Where the reference differs from the authors' code, it is in the comparison's favour of the
authors' side or neutral, never the other way:

* two outputs (valence, arousal) from one trunk, as avpipe; the JCA and RJCMA releases train one
  network per dimension (two trunks: twice this reference's cost for the pair);
* rja/dca: the visual stream enters through a Linear 512→512, avpipe's stand-in for the
  audio-guided spatial attention on a 7×7 map (cached face embeddings have one position);
* rjcma: the released layer computes a query projection ``J W_q`` and then uses the raw J; the
  reference skips the unused product (the authors pay for it, the reference does not).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: the widths the authors' modules receive: one 512-d token per clip for the A-V repos (TSAV audio
#: ResNet-18; the visual map after spatial attention), per-frame IR-50 / VGGish / BERT for RJCMA.
AUTHORS_DIMS = {"jca": {"audio": 512, "visual": 512}, "rja": {"visual": 512, "audio": 512},
                "dca": {"visual": 512, "audio": 512}, "rjcma": {"visual": 512, "audio": 128, "text": 768}}
PUBLISHED = tuple(AUTHORS_DIMS)


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ----------------------------------------------------------------------------- building blocks
class CoAttentionLayer(nn.Module):
    """One dense co-attention layer as released: joint J = [X_1 | … | X_M], query ``J W_q + b``
    (the A-V repos) or J itself (RJCMA); per modality a temporal key Linear L→L on X_mᵀ, a value
    Linear d→d, the map ``Dropout(tanh(K Q / √D))``, ``ReLU(tanh(V C))`` and the residual
    ``X + Dropout(ReLU(A W_o + b_o))``."""

    def __init__(self, dims: Sequence[int], L: int, dropout: float = 0.6, query: bool = True) -> None:
        super().__init__()
        self.D = sum(dims)
        self.query = nn.Linear(self.D, self.D) if query else None
        self.key = nn.ModuleList(nn.Linear(L, L) for _ in dims)
        self.value = nn.ModuleList(nn.Linear(d, d) for d in dims)
        self.out = nn.ModuleList(nn.Linear(self.D, d) for d in dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        joint = torch.cat(xs, dim=-1)
        q = joint if self.query is None else self.query(joint)
        res = []
        for key, value, out, x in zip(self.key, self.value, self.out, xs):
            corr = self.dropout(torch.tanh(torch.matmul(key(x.transpose(1, 2)), q) / math.sqrt(self.D)))
            att = F.relu(torch.tanh(torch.matmul(value(x), corr)))
            res.append(x + self.dropout(F.relu(out(att))))
        return res


class LearnedStateBLSTM(nn.Module):
    """The A-V repos' "LSTM" wrapper: bidirectional LSTM (h/2 per direction) started from learned
    states (one row per layer and direction, shared by the batch), then
    ``L2norm(Linear(Dropout([u | y])))``."""

    def __init__(self, e: int, h: int, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.rnn = nn.LSTM(e, h // 2, layers, batch_first=True, bidirectional=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.h0 = nn.Parameter(torch.randn(2 * layers, h // 2) * 0.1)
        self.c0 = nn.Parameter(torch.randn(2 * layers, h // 2) * 0.1)
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Linear(e + h, h)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n = u.shape[0]
        state = (self.h0.unsqueeze(1).expand(-1, n, -1).contiguous(),
                 self.c0.unsqueeze(1).expand(-1, n, -1).contiguous())
        y, _ = self.rnn(u, state)
        return _l2(self.embed(self.dropout(torch.cat([u, y], dim=-1))))


def _va_head(h: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(h, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 1))


class WeightNormConv(nn.Module):
    """Conv1d with weight normalisation computed in the forward (``w = g · v / ‖v‖`` per output
    channel), padded (k−1)·dilation on both sides; the caller chomps the tail (causal)."""

    def __init__(self, cin: int, cout: int, k: int, dilation: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(cout, cin, k) * 0.01)
        self.g = nn.Parameter(self.v.detach().flatten(1).norm(dim=1).view(-1, 1, 1).clone())
        self.bias = nn.Parameter(torch.zeros(cout))
        self.dilation, self.pad = dilation, (k - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.g * self.v / self.v.flatten(1).norm(dim=1).view(-1, 1, 1)
        return F.conv1d(x, w, self.bias, padding=self.pad, dilation=self.dilation)


class TemporalLevel(nn.Module):
    """[conv → chomp → LeakyReLU → Dropout] ×2, residual (1×1 conv when the width changes),
    LeakyReLU after the sum; on (B, C, T) as the authors' TCN runs."""

    def __init__(self, cin: int, cout: int, k: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv1, self.conv2 = WeightNormConv(cin, cout, k, dilation), WeightNormConv(cout, cout, k, dilation)
        self.act, self.dropout = nn.LeakyReLU(), nn.Dropout(dropout)
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chomp = self.conv1.pad
        y = self.dropout(self.act(self.conv1(x)[:, :, :-chomp]))
        y = self.dropout(self.act(self.conv2(y)[:, :, :-chomp]))
        return self.act(y + (x if self.downsample is None else self.downsample(x)))


# ----------------------------------------------------------------------------- the four models
class AuthorsJCA(nn.Module):
    """JCA (ABAW3): per-modality Linear 512→h, the affine joint cross-attention (per modality
    ``C = tanh(Xᵀ W_j J / √D)``, ``H = ReLU(Xᵀ W_a + C W_c)``, ``X + (H W_h)ᵀ``, no biases), concat
    of the attended audio and visual, Linear 2h→h → Dropout → Linear h→2 (no activation)."""

    def __init__(self, dims: Mapping[str, int], L: int, hidden: int = 128, k: int = 32, dropout: float = 0.6) -> None:
        super().__init__()
        D = 2 * hidden
        self.scale = 1.0 / math.sqrt(D)
        self.enc_a, self.enc_v = nn.Linear(dims["audio"], hidden), nn.Linear(dims["visual"], hidden)
        p = lambda *s: nn.Parameter(torch.randn(*s) * 0.1)  # noqa: E731
        self.ja, self.jv = p(L, L), p(L, L)
        self.wa, self.wv = p(L, k), p(L, k)
        self.ca, self.cv = p(D, k), p(D, k)
        self.ha, self.hv = p(k, L), p(k, L)
        self.regressor = nn.Sequential(nn.Linear(D, hidden), nn.Dropout(dropout), nn.Linear(hidden, 2))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        a, v = self.enc_a(audio), self.enc_v(visual)
        joint = torch.cat([a, v], dim=-1)
        a_t, v_t = a.transpose(1, 2), v.transpose(1, 2)
        corr_a = torch.tanh(torch.matmul(torch.matmul(a_t, self.ja), joint) * self.scale)
        corr_v = torch.tanh(torch.matmul(torch.matmul(v_t, self.jv), joint) * self.scale)
        hid_a = F.relu(torch.matmul(a_t, self.wa) + torch.matmul(corr_a, self.ca))
        hid_v = F.relu(torch.matmul(v_t, self.wv) + torch.matmul(corr_v, self.cv))
        att_a = torch.matmul(hid_a, self.ha).transpose(1, 2) + a
        att_v = torch.matmul(hid_v, self.hv).transpose(1, 2) + v
        return self.regressor(torch.cat([att_a, att_v], dim=-1))


class AuthorsRJA(nn.Module):
    """RJA with LSTMs (released: one co-attention layer) and, with ``gated``, DCA (two layers and
    a softmax gate per modality between the un-attended and attended features, τ = 0.1)."""

    def __init__(self, dims: Mapping[str, int], L: int, hidden: int = 512, layers: int = 1, gated: bool = False,
                 dropout: float = 0.6, lstm_dropout: float = 0.1, tau: float = 0.1) -> None:
        super().__init__()
        self.visual_in = nn.Linear(dims["visual"], hidden)  # the spatial attention on one position
        self.lstm_v = LearnedStateBLSTM(hidden, hidden, dropout=lstm_dropout)
        self.lstm_a = LearnedStateBLSTM(dims["audio"], hidden, dropout=lstm_dropout)
        self.coattn = nn.ModuleList(CoAttentionLayer([hidden, hidden], L, dropout) for _ in range(layers))
        self.gates = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(2)) if gated else None
        self.tau = tau
        self.lstm_joint = LearnedStateBLSTM(2 * hidden, hidden, dropout=0.0)
        self.head_v, self.head_a = _va_head(hidden, dropout), _va_head(hidden, dropout)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v = self.lstm_v(self.visual_in(_l2(visual)))
        a = self.lstm_a(_l2(audio))
        xs = [v, a]
        for layer in self.coattn:
            xs = layer(xs)
        if self.gates is not None:
            zs = []
            for gate, x, xh in zip(self.gates, (v, a), xs):
                g = torch.softmax(gate(xh) / self.tau, dim=-1)
                zs.append(F.relu(g[..., 0:1] * x + g[..., 1:2] * xh))
            xs = zs
        h = self.lstm_joint(torch.cat(xs, dim=-1))
        return torch.cat([self.head_v(h), self.head_a(h)], dim=-1)


class AuthorsRJCMA(nn.Module):
    """RJCMA (released RCMA): per-modality causal TCN and BatchNorm1d on (B, C, T), two stacked
    co-attention layers over {v, a, t} with the raw joint as query, concat, Linear D→256 →
    BatchNorm1d → LeakyReLU → Linear 256→2 → tanh."""

    def __init__(self, dims: Mapping[str, int], L: int, channels: Mapping[str, Sequence[int]] | None = None,
                 kernel: int = 5, tcn_dropout: float = 0.1, layers: int = 2, dropout: float = 0.6,
                 head_hidden: int = 256) -> None:
        super().__init__()
        ch = {"visual": [256] * 4, "audio": [128] * 4, "text": [128] * 4, **(channels or {})}
        self.names = ("visual", "audio", "text")
        self.tcn = nn.ModuleDict()
        for m in self.names:
            lv, c = [], dims[m]
            for i, co in enumerate(ch[m]):
                lv.append(TemporalLevel(c, co, kernel, 2 ** i, tcn_dropout))
                c = co
            self.tcn[m] = nn.Sequential(*lv)
        widths = [ch[m][-1] for m in self.names]
        self.norm = nn.ModuleDict({m: nn.BatchNorm1d(w) for m, w in zip(self.names, widths)})
        self.coattn = nn.ModuleList(CoAttentionLayer(widths, L, dropout, query=False) for _ in range(layers))
        self.fc1, self.bn, self.fc2 = nn.Linear(sum(widths), head_hidden), nn.BatchNorm1d(head_hidden), nn.Linear(head_hidden, 2)
        self.act = nn.LeakyReLU()

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        xs = [self.norm[m](self.tcn[m](x.transpose(1, 2))).transpose(1, 2)
              for m, x in zip(self.names, (visual, audio, text))]
        for layer in self.coattn:
            xs = layer(xs)
        h = self.fc1(torch.cat(xs, dim=-1))
        h = self.act(self.bn(h.transpose(1, 2))).transpose(1, 2)
        return torch.tanh(self.fc2(h))


#: the order in which each reference takes its inputs (its ``forward`` arguments)
INPUT_ORDER = {"jca": ("audio", "visual"), "rja": ("visual", "audio"), "dca": ("visual", "audio"),
               "rjcma": ("visual", "audio", "text")}


def build_reference(name: str, dims: Mapping[str, int], tokens: int, options: Mapping | None = None) -> nn.Module:
    """The reference of published ``name`` for ``tokens`` steps; ``options`` are the avpipe model's
    constructor options that change widths (``hidden``, ``k``, ``channels``, ``kernel``)."""
    o = dict(options or {})
    if name == "jca":
        return AuthorsJCA(dims, tokens, hidden=o.get("hidden", 128), k=o.get("k", 32))
    if name in ("rja", "dca"):
        return AuthorsRJA(dims, tokens, hidden=o.get("hidden", 512), layers=1 if name == "rja" else 2,
                          gated=name == "dca")
    if name == "rjcma":
        return AuthorsRJCMA(dims, tokens, channels=o.get("channels"), kernel=o.get("kernel", 5))
    raise ValueError(f"no reference module for {name!r}; have {', '.join(PUBLISHED)}")


# ----------------------------------------------------------------------------- weight mapping
def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def _map_coattn(dst: CoAttentionLayer, src: nn.Module) -> None:
    if dst.query is not None:
        _copy(dst.query, src.q)
    for i in range(len(dst.key)):
        _copy(dst.key[i], src.k[i])
        _copy(dst.value[i], src.v[i])
        _copy(dst.out[i], src.o[i])


def _map_blstm(dst: LearnedStateBLSTM, src: nn.Module) -> None:
    _copy(dst.rnn, src.lstm)
    _copy(dst.embed, src.proj)
    dst.h0.data.copy_(src.h0[:, 0])
    dst.c0.data.copy_(src.c0[:, 0])


def _map_conv(dst: WeightNormConv, src: nn.Module) -> None:
    par = src.parametrizations.weight
    dst.g.data.copy_(par.original0)
    dst.v.data.copy_(par.original1)
    dst.bias.data.copy_(src.bias)


@torch.no_grad()
def map_weights(name: str, model: nn.Module, ref: nn.Module) -> nn.Module:
    """Copy avpipe ``model``'s parameters (and BatchNorm statistics) into its reference ``ref``."""
    if name == "jca":
        _copy(ref.enc_a, model.proj["audio"])
        _copy(ref.enc_v, model.proj["visual"])
        blk = model.block  # avpipe's lists are in its modality order: audio, visual
        for i, s in enumerate("av"):
            for ours, theirs in (("j", blk.W_j), ("w", blk.W_m), ("c", blk.W_c), ("h", blk.W_h)):
                getattr(ref, ours + s).data.copy_(theirs[i])
        _copy(ref.regressor[0], model.head[0])
        _copy(ref.regressor[2], model.head[3])
    elif name in ("rja", "dca"):
        _copy(ref.visual_in, model.v_in)
        _map_blstm(ref.lstm_v, model.v_lstm)
        _map_blstm(ref.lstm_a, model.a_lstm)
        _map_blstm(ref.lstm_joint, model.joint)
        for dst, src in zip(ref.coattn, model.attn.layers, strict=True):
            _map_coattn(dst, src)
        if ref.gates is not None:
            for dst, src in zip(ref.gates, model.gate1, strict=True):
                _copy(dst, src.w)
        for dst, src in zip((ref.head_v, ref.head_a), model.heads.heads):
            _copy(dst, src)
    elif name == "rjcma":
        for m in ref.names:
            for dst, src in zip(ref.tcn[m], model.tcn[m].net, strict=True):
                _map_conv(dst.conv1, src.conv1)
                _map_conv(dst.conv2, src.conv2)
                if dst.downsample is not None:
                    _copy(dst.downsample, src.down)
            _copy(ref.norm[m], model.bn[m])
        for dst, src in zip(ref.coattn, model.attn.layers, strict=True):
            _map_coattn(dst, src)
        _copy(ref.fc1, model.fc1)
        _copy(ref.bn, model.bn_head)
        _copy(ref.fc2, model.fc2)
    else:
        raise ValueError(f"no reference module for {name!r}")
    return ref


# ----------------------------------------------------------------------------- equality
def build_pair(name: str, dims: Mapping[str, int] | None = None, window: int | None = None,
               clip_len: int | None = None, options: Mapping | None = None, seed: int = 0):
    """(avpipe model as ``--fusion name`` builds it, its reference with the same weights, config).

    ``window``/``clip_len``/``options`` override the published settings (tiny shapes for tests)."""
    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.models import create_model

    cfg = TrainConfig(fusion=name).resolved()
    dims = dict(dims or AUTHORS_DIMS[name])
    window = int(window or cfg.window)
    model_opts = {**cfg.model, **({"clip_len": clip_len} if clip_len else {}), **(options or {})}
    torch.manual_seed(seed)
    model = create_model(name, dims, window, **model_opts)
    ref = build_reference(name, dims, model.tokens, options)
    return model, map_weights(name, model, ref), cfg


def _perturb_batchnorm(model: nn.Module, seed: int) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BatchNorm is tested."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm1d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=g, dtype=bn.running_mean.dtype) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=g, dtype=bn.running_var.dtype) + 0.5)
            bn.weight.data.copy_(1 + 0.1 * torch.randn(n, generator=g, dtype=bn.weight.dtype))
            bn.bias.data.copy_(0.1 * torch.randn(n, generator=g, dtype=bn.bias.dtype))


@torch.no_grad()
def max_difference(name: str, batch: int = 2, dims: Mapping[str, int] | None = None, window: int | None = None,
                   clip_len: int | None = None, options: Mapping | None = None, seed: int = 0) -> float:
    """Max |avpipe − reference| in float64, eval mode, weights mapped, on random clip tokens.

    avpipe gets per-frame rows (every frame of a clip equal to the clip's token, all valid), the
    reference the tokens; avpipe's per-frame output is compared at each clip's first frame."""
    model, ref, _ = build_pair(name, dims, window, clip_len, options, seed)
    with torch.no_grad():
        _perturb_batchnorm(model, seed + 7)
        map_weights(name, model, ref)
    model, ref = model.double().eval(), ref.double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    K = model.clip_len
    tokens = {m: torch.randn(batch, model.tokens, d, generator=g, dtype=torch.float64) for m, d in model.dims.items()}
    frames = {m: t.repeat_interleave(K, dim=1) for m, t in tokens.items()}
    mask = {m: torch.ones(batch, model.window, dtype=torch.bool) for m in frames}
    ours = model(frames, mask)[:, ::K]
    theirs = ref(*(tokens[m] for m in INPUT_ORDER[name]))
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: avpipe {tuple(ours.shape)} vs reference {tuple(theirs.shape)}")
    return float((ours - theirs).abs().max())
