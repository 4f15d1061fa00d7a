"""Windows over a :class:`~avpipe.fusion.data.FeatureBank`: index arithmetic, no copies, no I/O.

A window is ``(start row in the bank, valid length)``. Batches are built by one gather per
modality: ``rows = start[:, None] + arange(T)``, positions past the video's end are padded (zero
features, mask False). Everything happens on the bank's device, so a GPU epoch never leaves it.

Placement (the RJCMA convention): windows of ``T`` frames every ``hop``
frames, the last one aligned to the video's end so that every frame is covered; a video shorter
than ``T`` gives one padded window. Evaluation averages the overlapping predictions per frame.

Clip tokens (:func:`pool_clips`, :func:`expand_clips`): models with ``clip_len`` K > 1 see
``T / K`` tokens per window (the authors' JCA/RJA/DCA granularity) and their per-token
predictions are expanded back to frames, so the data path and the loss stay per frame.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Windows:
    """``start`` (W,) global row, ``length`` (W,) valid frames, ``video`` (W,) index into the bank."""

    start: torch.Tensor
    length: torch.Tensor
    video: torch.Tensor

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def select(self, idx: torch.Tensor) -> "Windows":
        return Windows(self.start[idx], self.length[idx], self.video[idx])


def window_starts(lengths: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-video local starts: returns (video index, local start, valid length) arrays."""
    if window < 1 or hop < 1:
        raise ValueError("window and hop must be >= 1")
    vids, starts, lens = [], [], []
    for v, n in enumerate(np.asarray(lengths, dtype=np.int64)):
        if n <= 0:
            continue
        if n <= window:
            s = np.array([0])
        else:
            s = np.arange(0, n - window + 1, hop)
            if s[-1] != n - window:
                s = np.append(s, n - window)
        vids.append(np.full(len(s), v))
        starts.append(s)
        lens.append(np.minimum(window, n - s))
    if not vids:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    return np.concatenate(vids), np.concatenate(starts), np.concatenate(lens)


def make_windows(offsets: torch.Tensor, window: int, hop: int, label_valid: torch.Tensor | None = None,
                 require_labels: bool = False) -> Windows:
    """Windows of every video of a bank (``offsets`` (V+1,)). With ``require_labels``, windows
    without a single labelled frame are dropped (they carry no gradient)."""
    off = offsets.cpu().numpy()
    v, s, n = window_starts(np.diff(off), window, hop)
    start = torch.from_numpy(off[v] + s)
    w = Windows(start, torch.from_numpy(n), torch.from_numpy(v))
    if require_labels and label_valid is not None and len(w):
        c = torch.cat([torch.zeros(1, dtype=torch.long), label_valid.cpu().long().cumsum(0)])
        keep = (c[w.start + w.length] - c[w.start]) > 0
        w = w.select(keep.nonzero().squeeze(1))
    dev = offsets.device
    return Windows(w.start.to(dev), w.length.to(dev), w.video.to(dev))


def window_rows(w: Windows, window: int, pad_row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) global row indices (padding → ``pad_row``, the bank's zero sentinel) and the
    (B, T) in-window mask."""
    ar = torch.arange(window, device=w.start.device)
    inwin = ar.unsqueeze(0) < w.length.unsqueeze(1)
    rows = torch.where(inwin, w.start.unsqueeze(1) + ar.unsqueeze(0),
                       torch.full((), pad_row, dtype=torch.long, device=ar.device))
    return rows, inwin


def batches(n: int, batch_size: int, *, seed: int | None, epoch: int = 0, rank: int = 0, world: int = 1,
            device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Window index batches for one epoch. ``seed=None``: in order (evaluation).

    The permutation depends only on (seed, epoch), so a resumed run sees the same order as an
    uninterrupted one; ranks take interleaved slices of it (same count on every rank, the
    ``n % world`` leftover dropped, as DistributedSampler(drop_last=True) does).
    """
    if seed is None:
        order = torch.arange(n)
    else:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        order = torch.randperm(n, generator=g)
    if world > 1:
        order = order[: n - n % world][rank::world]
    order = order.to(device)
    for i in range(0, len(order), batch_size):
        yield order[i: i + batch_size]


# ----------------------------------------------------------------------------- clip tokens
def pool_clips(x: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], clip_len: int
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Cut each (B, T, D) window into clips of ``clip_len`` frames and pool each clip to one token.

    Why: the JCA/RJA/DCA authors run their attention over one token per 32-frame clip (8 or 16
    tokens per window), not one per frame; the L×L weights and the BLSTMs then cost 32× less.
    A token is the mean of the clip's *valid* frames (no face / padding excluded) and is valid
    when at least one of its frames is; a window whose length is not a multiple of ``clip_len``
    is padded at the end with invalid frames. Returns ``({m: (B, L, D)}, {m: (B, L) bool})``.
    """
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    xs, ms = {}, {}
    for m, t in x.items():
        B, T = t.shape[:2]
        L = -(-T // clip_len)
        mk = mask[m] if m in mask else torch.ones(B, T, dtype=torch.bool, device=t.device)
        pad = L * clip_len - T
        if pad:
            t = torch.nn.functional.pad(t, (0, 0, 0, pad))
            mk = torch.nn.functional.pad(mk, (0, pad), value=False)
        w = mk.reshape(B, L, clip_len, 1).to(t.dtype)
        n = w.sum(2)  # (B, L, 1)
        xs[m] = (t.reshape(B, L, clip_len, -1) * w).sum(2) / n.clamp_min(1)
        ms[m] = n.squeeze(-1) > 0
    return xs, ms


def expand_clips(y: torch.Tensor, clip_len: int, frames: int) -> torch.Tensor:
    """Per-token predictions (B, L, C) back to per-frame (B, frames, C): every frame of a clip
    gets its clip's prediction (overlapping windows then average them per frame)."""
    return y.repeat_interleave(clip_len, dim=1)[:, :frames]
