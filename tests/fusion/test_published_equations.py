"""``jca``, ``rja``, ``dca`` and ``rjcma`` as ``--fusion NAME`` builds them (the authors' released
configurations: window, clip length and widths resolved from the name) equal a per-sample
reference written from the published equations, in float64, to 1e-10.

The references below use the models' parameters but none of their code: every LSTM gate, causal
convolution tap, co-attention map, gate and BatchNorm is written out per sample, and the clip
tokens are pooled by an explicit loop. A change of orientation, nonlinearity, recursion, query
projection or pooling rule fails here.
"""
from __future__ import annotations

import math

import pytest
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.models import create_model

DIMS = {"visual": 512, "audio": 128, "text": 384}
B = 2
TOL = dict(rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- helpers
def _build(name: str, seed: int = 0):
    cfg = TrainConfig(fusion=name).resolved()
    torch.manual_seed(seed)
    mods = {"jca": ("audio", "visual"), "rja": ("visual", "audio"), "rja-shared": ("visual", "audio"),
            "dca": ("visual", "audio"), "rjcma": ("visual", "audio", "text")}[name]
    m = create_model(name, {k: DIMS[k] for k in mods}, cfg.window, **cfg.model).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = {k: torch.randn(B, cfg.window, DIMS[k], generator=g, dtype=torch.float64) for k in mods}
    mask = {k: torch.rand(B, cfg.window, generator=g) > 0.2 for k in mods}
    mask[mods[0]][0, : 2 * max(cfg.clip_len, 1)] = False  # whole clips without that modality
    mask[mods[-1]][1, -37:] = False  # padding past the video's end
    return cfg, m, x, mask


def _lin(x, layer):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)


def _pool(x, mask, K):
    """Per sample: clip c of K frames → mean of its valid frames; valid if any frame is."""
    T, d = x.shape
    L = T // K
    out, valid = torch.zeros(L, d, dtype=x.dtype), torch.zeros(L, dtype=torch.bool)
    for c in range(L):
        rows = [t for t in range(c * K, (c + 1) * K) if mask[t]]
        if rows:
            out[c] = sum(x[t] for t in rows) / len(rows)
            valid[c] = True
    return out, valid


def _expand(y, K):
    return torch.stack([y[t // K] for t in range(y.shape[0] * K)])


def _lstm_dir(u, lstm, layer, rev, h, c):
    sfx = f"_l{layer}" + ("_reverse" if rev else "")
    Wi, Wh = getattr(lstm, "weight_ih" + sfx), getattr(lstm, "weight_hh" + sfx)
    bi, bh = getattr(lstm, "bias_ih" + sfx), getattr(lstm, "bias_hh" + sfx)
    n = Wh.shape[1]
    out = [None] * u.shape[0]
    steps = range(u.shape[0] - 1, -1, -1) if rev else range(u.shape[0])
    for t in steps:
        z = Wi @ u[t] + bi + Wh @ h + bh
        i, f, g, o = torch.sigmoid(z[:n]), torch.sigmoid(z[n:2 * n]), torch.tanh(z[2 * n:3 * n]), torch.sigmoid(z[3 * n:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        out[t] = h
    return torch.stack(out)


def _blstm(u, blk):
    """BiLSTM (learned initial states) → L2norm([u | y] W + b)."""
    y = u
    for layer in range(blk.lstm.num_layers):
        y = torch.cat([_lstm_dir(y, blk.lstm, layer, rev, blk.h0[2 * layer + rev, 0], blk.c0[2 * layer + rev, 0])
                       for rev in (0, 1)], dim=1)
    z = _lin(torch.cat([u, y], dim=1), blk.proj)
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _coattention(xs, layer):
    """JCA-v2: J = [X_1|..|X_M], Q = J W_q + b_q (or J), K_m = X_m^T W_k + b_k, V_m = X_m W_v + b_v,
    C_m = tanh(K_m Q / √D), A_m = ReLU(tanh(V_m C_m)), X_m + ReLU(A_m W_o + b_o)."""
    J = torch.cat(xs, dim=1)
    D = J.shape[1]
    Q = _lin(J, layer.q) if layer.q is not None else J
    out = []
    for i, X in enumerate(xs):
        C = torch.tanh(_lin(X.T, layer.k[i]) @ Q / math.sqrt(D))
        A = torch.relu(torch.tanh(_lin(X, layer.v[i]) @ C))
        out.append(X + torch.relu(_lin(A, layer.o[i])))
    return out


def _heads(h, heads):
    return torch.cat([_lin(torch.relu(_lin(h, hd[0])), hd[3]) for hd in heads.heads], dim=1)


def _rja_trunk(m, v, a):
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return [_blstm(_lin(v, m.v_in), m.v_lstm), _blstm(a, m.a_lstm)]


def _tokens(m, x, mask, b, names):
    return [_pool(x[k][b] * mask[k][b, :, None], mask[k][b], m.clip_len)[0] for k in names]


# ----------------------------------------------------------------------------- references
def ref_jca(m, x, mask):
    outs = []
    for b in range(B):
        xa, xv = (_lin(t, m.proj[k]) for k, t in zip(("audio", "visual"), _tokens(m, x, mask, b, ("audio", "visual"))))
        J = torch.cat([xa, xv], dim=1)
        att = []
        for i, X in enumerate((xa, xv)):
            blk = m.block
            C = torch.tanh(X.T @ blk.W_j[i] @ J / math.sqrt(J.shape[1]))
            H = torch.relu(X.T @ blk.W_m[i] + C @ blk.W_c[i])
            att.append((H @ blk.W_h[i]).T + X)
        y = _lin(_lin(torch.cat(att, dim=1), m.head[0]), m.head[3])  # no activation in between
        outs.append(_expand(y, m.clip_len))
    return torch.stack(outs)


def ref_rja(m, x, mask, iterations=1, shared=False):
    outs = []
    for b in range(B):
        xs = _rja_trunk(m, *_tokens(m, x, mask, b, ("visual", "audio")))
        for it in range(iterations):
            xs = _coattention(xs, m.attn.layers[0 if shared else it])
        outs.append(_expand(_heads(_blstm(torch.cat(xs, dim=1), m.joint), m.heads), m.clip_len))
    return torch.stack(outs)


def ref_dca(m, x, mask, tau=0.1):
    outs = []
    for b in range(B):
        xs = _rja_trunk(m, *_tokens(m, x, mask, b, ("visual", "audio")))
        att = _coattention(_coattention(xs, m.attn.layers[0]), m.attn.layers[1])
        zs = []
        for i, (X, Xh) in enumerate(zip(xs, att)):
            g = torch.softmax(_lin(Xh, m.gate1[i].w) / tau, dim=1)  # gate on the attended features
            zs.append(torch.relu(g[:, :1] * X + g[:, 1:] * Xh))
        outs.append(_expand(_heads(_blstm(torch.cat(zs, dim=1), m.joint), m.heads), m.clip_len))
    return torch.stack(outs)


def _causal_conv(x, conv, dilation):
    """y[t] = b + Σ_j W[:, :, j] x[t - (k-1-j)·dilation]; weight norm W = g · v / ||v||."""
    if hasattr(conv, "parametrizations"):
        g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
        W = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
    else:
        W = conv.weight
    T, k = x.shape[0], W.shape[2]
    y = conv.bias.expand(T, -1).clone()
    for j in range(k):
        s = (k - 1 - j) * dilation
        if s < T:
            y[s:] += x[: T - s] @ W[:, :, j].T
    return y


def _bn(h, bn):
    return (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def ref_rjcma(m, x, mask):
    leaky = torch.nn.functional.leaky_relu
    outs = []
    for b in range(B):
        xs = []
        for k, t in zip(("visual", "audio", "text"), _tokens(m, x, mask, b, ("visual", "audio", "text"))):
            h = t
            for lvl, blk in enumerate(m.tcn[k].net):
                y = leaky(_causal_conv(h, blk.conv1, 2 ** lvl))
                y = leaky(_causal_conv(y, blk.conv2, 2 ** lvl))
                h = leaky(y + (h if blk.down is None else _causal_conv(h, blk.down, 1)))
            xs.append(_bn(h, m.bn[k]))
        att = _coattention(_coattention(xs, m.attn.layers[0]), m.attn.layers[1])
        h = leaky(_bn(_lin(torch.cat(att, dim=1), m.fc1), m.bn_head))
        outs.append(_expand(torch.tanh(_lin(h, m.fc2)), m.clip_len))
    return torch.stack(outs)


# ----------------------------------------------------------------------------- tests
def test_jca_released_configuration_equals_equations():
    cfg, m, x, mask = _build("jca")
    assert (cfg.window, cfg.clip_len, m.tokens, m.block.W_j[0].shape[0]) == (256, 32, 8, 8)
    assert m.proj["audio"].out_features == 128 and isinstance(m.head[1], torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask), ref_jca(m, x, mask), **TOL)


def test_rja_released_configuration_equals_equations():
    cfg, m, x, mask = _build("rja")
    assert (cfg.window, cfg.clip_len, m.tokens) == (512, 32, 16)
    assert len(m.attn.layers) == 1 and m.attn.iterations == 1 and m.attn.layers[0].q is not None
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask), ref_rja(m, x, mask), **TOL)


def test_rja_shared_variant_feeds_back_one_layer_twice():
    _, m, x, mask = _build("rja-shared")
    assert len(m.attn.layers) == 1 and m.attn.iterations == 2
    with torch.no_grad():
        y = m(x, mask)
        torch.testing.assert_close(y, ref_rja(m, x, mask, iterations=2, shared=True), **TOL)
        assert not torch.allclose(y, ref_rja(m, x, mask, iterations=1), atol=1e-6)


def test_dca_released_configuration_equals_equations():
    cfg, m, x, mask = _build("dca")
    assert (cfg.window, cfg.clip_len, cfg.optimizer, cfg.weight_decay) == (512, 32, "adamw", 1e-5)
    assert len(m.attn.layers) == 2 and not m.attn.shared and m.gate2 is None and m.self_attn is None
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask), ref_dca(m, x, mask), **TOL)


def test_rjcma_released_configuration_equals_equations():
    cfg, m, x, mask = _build("rjcma")
    # early stopping: the code's counter of 50 lives in the rjcma_warmup schedule (avpipe.fusion.recipe_schedule)
    assert (cfg.window, cfg.hop, cfg.clip_len, cfg.batch_size, cfg.schedule) == (300, 200, 1, 12, "rjcma_warmup")
    assert [m.tcn[k].out_dim for k in ("visual", "audio", "text")] == [256, 128, 128]
    assert len(m.attn.layers) == 2 and not m.attn.shared and all(lyr.q is None for lyr in m.attn.layers)
    g = torch.Generator().manual_seed(5)
    for bn in [*m.bn.values(), m.bn_head]:  # non-trivial running statistics
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64) * 0.1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask), ref_rjcma(m, x, mask), **TOL)


@pytest.mark.parametrize("name,variant", [("rja", "rja-shared"), ("rjcma", "rjcma-shared")])
def test_variants_are_not_the_published_names(name, variant):
    a, b = TrainConfig(fusion=name).resolved(), TrainConfig(fusion=variant).resolved()
    ma = create_model(name, DIMS, a.window, **a.model)
    mb = create_model(variant, DIMS, b.window, **b.model)
    assert len(mb.attn.layers) == 1 and mb.attn.shared and mb.attn.layers[0].q is not None
    assert (ma.attn.shared, ma.attn.iterations) != (mb.attn.shared, mb.attn.iterations)
