"""JCA (the ABAW3 joint cross-attention block and regressor) checked against the equations, written out independently per sample.

Pins the block's orientation (tanh on the joint correlation, ReLU on the hidden map, residual
added after W_h, no activation after the residual), the 2h regressor input and that
masked rows (no face / padding) carry no content into the attention sums.
"""
from __future__ import annotations

import math

import torch

from avpipe.fusion.models import create_model
from avpipe.fusion.models.blocks import JCAv1

L, B, d, k = 10, 3, 6, 4


def _reference(block: JCAv1, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    outs = [[], []]
    D = sum(x.shape[-1] for x in xs)
    for b in range(xs[0].shape[0]):
        J = torch.cat([x[b] for x in xs], dim=1)  # L × D
        for i, x in enumerate(xs):
            Xm = x[b]  # L × d_m
            C = torch.tanh(Xm.T @ block.W_j[i] @ J / math.sqrt(D))  # d_m × D
            H = torch.relu(Xm.T @ block.W_m[i] + C @ block.W_c[i])  # d_m × k
            outs[i].append((H @ block.W_h[i]).T + Xm)  # L × d_m
    return [torch.stack(o) for o in outs]


def test_jcav1_matches_the_equations():
    torch.manual_seed(0)
    blk = JCAv1([d, d], L, k)
    assert [tuple(p.shape) for p in (blk.W_j[0], blk.W_m[0], blk.W_c[0], blk.W_h[0])] == \
        [(L, L), (L, k), (2 * d, k), (k, L)]
    assert not any("bias" in n for n, _ in blk.named_parameters())
    xs = [torch.randn(B, L, d), torch.randn(B, L, d)]
    for got, want in zip(blk(xs), _reference(blk, xs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_jca_regressor_takes_attended_concat_and_ignores_masked_content():
    torch.manual_seed(0)
    m = create_model("jca", {"visual": 5, "audio": 3}, L, hidden=d, k=k).eval()
    assert m.head[0].in_features == 2 * d
    g = torch.Generator().manual_seed(1)
    x = {"visual": torch.randn(B, L, 5, generator=g), "audio": torch.randn(B, L, 3, generator=g)}
    mask = {"visual": torch.ones(B, L, dtype=torch.bool), "audio": torch.ones(B, L, dtype=torch.bool)}
    mask["visual"][:, 2:4] = False  # no face
    mask["visual"][1, 7:] = mask["audio"][1, 7:] = False  # padding past the video's end
    y = m(x, mask)
    x2 = {kk: v.clone() for kk, v in x.items()}
    x2["visual"][~mask["visual"]] = 100.0
    x2["audio"][~mask["audio"]] = -100.0
    torch.testing.assert_close(m(x2, mask), y)
    # head = Linear(2h→h) → (Identity) → Dropout → Linear(h→2) on [X̂_a | X̂_v]
    xa, xv = (m.proj[mm](x[mm] * mask[mm].unsqueeze(-1)) for mm in ("audio", "visual"))
    ha, hv = m.block([xa, xv])
    torch.testing.assert_close(m.head(torch.cat([ha, hv], -1)), y)
