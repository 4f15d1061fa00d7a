"""Building blocks shared by the published models, each defined once.

* :class:`JCAv1` — joint cross-attention, "affine" form;
* :class:`JointCoAttention` — JCA-v2 "dense co-attention" over 2 or 3 modalities, with
  :class:`RecursiveJointAttention` for the recursion (weight-shared loop or stacked layers);
* :class:`BLSTM` — 2-layer BiLSTM with learned initial states + residual embedding;
* :class:`TCN` — causal temporal convolutional network;
* :class:`DCAGate` — softmax gate between un-attended and attended features;
* :class:`VAHeads` — RJA's two scalar heads (valence, arousal) on a shared trunk.

The audio-guided spatial attention is not here: cached face embeddings are pooled vectors,
for which it reduces to a Linear layer (one position, attention weight 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def xavier_(module: nn.Module) -> None:
    """Xavier-uniform weights, zero biases for Linear layers (the Praveen repos' init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class JCAv1(nn.Module):
    """JCA block, affine form for two modalities; no biases, separate weights per modality.

    ``C_m = tanh(X_m^T W_j J / sqrt(D))``, ``H_m = ReLU(X_m^T W_m + C_m W_c)``,
    ``X̂_m = (H_m W_h)^T + X_m``. The L×L ``W_j`` ties the block to windows of exactly ``L`` frames.
    """

    def __init__(self, dims: list[int], L: int, k: int = 32) -> None:
        super().__init__()
        D = sum(dims)
        self.D = D
        self.W_j = nn.ParameterList([nn.Parameter(torch.empty(L, L)) for _ in dims])
        self.W_m = nn.ParameterList([nn.Parameter(torch.empty(L, k)) for _ in dims])
        self.W_c = nn.ParameterList([nn.Parameter(torch.empty(D, k)) for _ in dims])
        self.W_h = nn.ParameterList([nn.Parameter(torch.empty(k, L)) for _ in dims])
        for p in self.parameters():
            nn.init.xavier_uniform_(p)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        J = torch.cat(xs, dim=-1)  # (B, L, D)
        out = []
        for i, X in enumerate(xs):
            Xt = X.transpose(1, 2)  # (B, d, L)
            C = torch.tanh(Xt @ self.W_j[i] @ J / math.sqrt(self.D))  # (B, d, D)
            H = F.relu(Xt @ self.W_m[i] + C @ self.W_c[i])  # (B, d, k)
            out.append((H @ self.W_h[i]).transpose(1, 2) + X)  # (B, L, d)
        return out


class JointCoAttention(nn.Module):
    """One JCA-v2 layer over M modalities.

    ``use_query_proj``: the A-V repos project the joint representation (``Q = J W_q``); the released
    RJCMA code computes Q and then uses the raw J. Default True (the A-V repos and the papers'
    formulation); False reproduces the RJCMA code.
    """

    def __init__(self, dims: list[int], L: int, dropout: float = 0.6, use_query_proj: bool = True) -> None:
        super().__init__()
        D = sum(dims)
        self.D = D
        self.q = nn.Linear(D, D) if use_query_proj else None
        self.k = nn.ModuleList([nn.Linear(L, L) for _ in dims])
        self.v = nn.ModuleList([nn.Linear(d, d) for d in dims])
        self.o = nn.ModuleList([nn.Linear(D, d) for d in dims])
        self.drop = nn.Dropout(dropout)
        xavier_(self)

    #: on CPU the batch runs in chunks whose (d, D) maps total about this many bytes, so that the
    #: maps stay in cache between the elementwise passes (faster than one pass at RJA's widths); on
    #: accelerators one batched pass is faster.
    cpu_chunk_bytes: int = 1 << 22

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        B = xs[0].shape[0]
        per_sample = max(x.shape[-1] for x in xs) * self.D * xs[0].element_size()
        n = max(1, self.cpu_chunk_bytes // per_sample)
        if xs[0].device.type != "cpu" or B <= n:
            return self._forward(xs)
        parts = [self._forward([x[i: i + n] for x in xs]) for i in range(0, B, n)]
        return [torch.cat([p[j] for p in parts]) for j in range(len(xs))]

    def _forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``C = Dropout(tanh(K Q / √D))``, ``A = ReLU(tanh(V C))``, ``X + Dropout(ReLU(A W_o + b_o))``.

        The (B, d, D) correlation maps are the block's cost (1M elements per sample for RJA's
        d = 512, D = 1024; the matmuls around them are only L = 16 deep), so every scalar factor is
        applied to the small operand instead: 1/√D to K (B, d, L) and the dropout's 1/(1-p) to V
        (B, L, d); the dropout mask is drawn with ``rand`` (a plain Bernoulli(1-p) keep mask,
        cheaper on CPU than ``bernoulli_``). Same function, three fewer passes over the maps.
        """
        J = torch.cat(xs, dim=-1)  # (B, L, D)
        Q = self.q(J) if self.q is not None else J
        p = self.drop.p if self.training else 0.0
        out = []
        for i, X in enumerate(xs):
            K = self.k[i](X.transpose(1, 2)) * (1.0 / math.sqrt(self.D))  # (B, d, L): temporal mixing per channel
            V = self.v[i](X)  # (B, L, d)
            C = torch.tanh(K @ Q)  # (B, d, D)
            if p > 0:
                C = C * (torch.rand_like(C) >= p)
                V = V * (1.0 / (1.0 - p))
            A = F.relu(torch.tanh(V @ C))  # (B, L, D)
            out.append(X + self.drop(F.relu(self.o[i](A))))
        return out


class RecursiveJointAttention(nn.Module):
    """Recursion over JCA-v2: the attended features are fed back ``iterations`` times.

    ``shared=True`` — one layer applied ``iterations`` times (the papers' recursion, RJA/RJCMA);
    ``shared=False`` — ``iterations`` stacked layers with separate weights (the released code's
    ``num_seq``; RJA code = 1 layer, DCA/RJCMA code = 2).
    """

    def __init__(self, dims: list[int], L: int, iterations: int = 2, shared: bool = True,
                 dropout: float = 0.6, use_query_proj: bool = True) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError("iterations must be >= 1")
        self.iterations = iterations
        self.shared = shared
        n = 1 if shared else iterations
        self.layers = nn.ModuleList([JointCoAttention(dims, L, dropout, use_query_proj) for _ in range(n)])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for i in range(self.iterations):
            xs = self.layers[0 if self.shared else i](xs)
        return xs


class BLSTM(nn.Module):
    """The RJA/DCA "LSTM" wrapper: 2-layer BiLSTM (hidden h/2 per direction) with learned initial states, then
    ``L2norm(Dropout([u | BiLSTM(u)]) W + b)``."""

    def __init__(self, in_dim: int, out_dim: int, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        if out_dim % 2:
            raise ValueError("BLSTM out_dim must be even")
        h = out_dim // 2
        self.lstm = nn.LSTM(in_dim, h, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.h0 = nn.Parameter(torch.empty(2 * layers, 1, h))
        self.c0 = nn.Parameter(torch.empty(2 * layers, 1, h))
        nn.init.xavier_uniform_(self.h0)
        nn.init.xavier_uniform_(self.c0)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim + out_dim, out_dim)
        xavier_(self.proj)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B = u.shape[0]
        h0 = self.h0.expand(-1, B, -1).contiguous().to(u.dtype)
        c0 = self.c0.expand(-1, B, -1).contiguous().to(u.dtype)
        y, _ = self.lstm(u, (h0, c0))
        return F.normalize(self.proj(self.drop(torch.cat([u, y], dim=-1))), dim=-1)


class _TemporalBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, dilation: int, dropout: float) -> None:
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.pad = (k - 1) * dilation
        self.conv1 = wn(nn.Conv1d(cin, cout, k, padding=self.pad, dilation=dilation))
        self.conv2 = wn(nn.Conv1d(cout, cout, k, padding=self.pad, dilation=dilation))
        self.drop = nn.Dropout(dropout)
        self.down = nn.Conv1d(cin, cout, 1) if cin != cout else None
        for c in (self.conv1, self.conv2, self.down):
            if c is not None:
                nn.init.xavier_uniform_(c.weight, gain=math.sqrt(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        T = x.shape[-1]
        y = self.drop(F.leaky_relu(self.conv1(x)[..., :T]))  # chomp: causal
        y = self.drop(F.leaky_relu(self.conv2(y)[..., :T]))
        return F.leaky_relu(y + (x if self.down is None else self.down(x)))


class TCN(nn.Module):
    """Causal TCN on (B, T, C): level i has dilation 2^i, kernel k (default 5)."""

    def __init__(self, in_dim: int, channels: list[int], k: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        blocks, c = [], in_dim
        for i, co in enumerate(channels):
            blocks.append(_TemporalBlock(c, co, k, 2 ** i, dropout))
            c = co
        self.net = nn.Sequential(*blocks)
        self.out_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class DCAGate(nn.Module):
    """DCA gate / IACA stage 1: ``g = softmax(W [inputs] / τ)`` over two alternatives per time step,
    ``Z = ReLU(g0 * a + g1 * b)``."""

    def __init__(self, gate_in: int, tau: float = 0.1) -> None:
        super().__init__()
        self.w = nn.Linear(gate_in, 2)
        self.tau = tau
        xavier_(self)

    def weights(self, gate_input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.w(gate_input) / self.tau, dim=-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor, gate_input: torch.Tensor) -> torch.Tensor:
        g = self.weights(gate_input)
        return F.relu(g[..., :1] * a + g[..., 1:] * b)


class VAHeads(nn.Module):
    """Two scalar heads on one trunk (RJA): Linear h→128 → ReLU → Dropout → Linear 128→1, each."""

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.6) -> None:
        super().__init__()
        self.heads = nn.ModuleList([
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
            for _ in range(2)])
        xavier_(self)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(h) for head in self.heads], dim=-1)
