"""Windows over a :class:`~avpipe.fusion.data.FeatureBank`: index arithmetic, no copies, no I/O.

A window is ``(start row in the bank, valid length)``. Batches are built by one gather per
modality: ``rows = start[:, None] + arange(T)``, positions past the video's end are padded (zero
features, mask False). Everything happens on the bank's device, so a GPU epoch never leaves it.

Placement (the RJCMA convention): windows of ``T`` frames every ``hop``
frames, the last one aligned to the video's end so that every frame is covered; a video shorter
than ``T`` gives one padded window. Evaluation averages the overlapping predictions per frame.

Clip phases (:func:`clip_phase_starts`, the JCA/RJA/DCA authors' enumeration): for a window of W
frames cut into clips of K frames, the authors shift the window one frame at a time K times and then
jump, so that every frame is the last frame of exactly one clip of one window. The first windows
start up to K − 1 frames *before* the video (``lead`` padding: those positions are invalid).

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
    """``start`` (W,) global row of the first frame inside the video, ``length`` (W,) valid frames,
    ``video`` (W,) index into the bank, ``lead`` (W,) padded positions before ``start`` (None = 0:
    only windows that begin before their video, the authors' first clip phases, have any)."""

    start: torch.Tensor
    length: torch.Tensor
    video: torch.Tensor
    lead: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def select(self, idx: torch.Tensor) -> "Windows":
        return Windows(self.start[idx], self.length[idx], self.video[idx],
                       None if self.lead is None else self.lead[idx])


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


def clip_phase_starts(n: int, window: int, clip: int) -> np.ndarray:
    """Local start frames (0-based, possibly negative) of the authors' clip-phase windows over a
    video of ``n`` frames: ``s = window·g + j − (clip − 1)`` for g = 0, 1, … and j = 0 … clip − 1,
    while the window ends inside the video (``s + window <= n``).

    Why: JCA (window 256, clip 32) and RJA/DCA (512, 32) end window g, shift j at frame
    E = window − clip + 1 + window·g + j (1-based), so clip i of it ends at 1 + window·g + clip·i + j:
    every frame but the last few is the last frame of exactly one clip, and a video shorter than
    window − clip + 1 frames has no window at all."""
    if window < 1 or clip < 1 or window % clip:
        raise ValueError(f"window {window} must be a positive multiple of clip {clip}")
    s = np.arange(-(clip - 1), int(n) - window + 1, dtype=np.int64)
    return s[(s + clip - 1) % window < clip]


def clip_phase_windows(offsets: torch.Tensor, window: int, clip: int,
                       label_valid: torch.Tensor | None = None) -> Windows:
    """The authors' clip-phase windows of every video of a bank, kept (as the authors keep them)
    only when every clip holds at least one labelled frame (``label_valid``; None: all kept)."""
    off = offsets.cpu().numpy()
    lab = None if label_valid is None else label_valid.cpu().numpy().astype(bool)
    vids, starts, leads, lens = [], [], [], []
    for v, n in enumerate(np.diff(off)):
        s = clip_phase_starts(int(n), window, clip)
        if not len(s):
            continue
        if lab is not None:
            c = np.concatenate([[0], np.cumsum(lab[off[v]: off[v + 1]])])
            ok = np.ones(len(s), dtype=bool)
            for i in range(window // clip):
                a = np.clip(s + clip * i, 0, n)
                b = np.clip(s + clip * (i + 1), 0, n)
                ok &= (c[b] - c[a]) > 0
            s = s[ok]
        lead = np.maximum(0, -s)
        vids.append(np.full(len(s), v))
        starts.append(off[v] + s + lead)
        leads.append(lead)
        lens.append(window - lead)
    if not vids:
        z = torch.zeros(0, dtype=torch.long, device=offsets.device)
        return Windows(z, z, z, z)
    t = [torch.from_numpy(np.concatenate(a).astype(np.int64)).to(offsets.device) for a in (starts, lens, vids, leads)]
    return Windows(*t)


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
    (B, T) in-window mask (False on ``lead`` and trailing padding)."""
    ar = torch.arange(window, device=w.start.device).unsqueeze(0)
    if w.lead is not None:
        ar = ar - w.lead.unsqueeze(1)
        inwin = (ar >= 0) & (ar < w.length.unsqueeze(1))
    else:
        inwin = ar < w.length.unsqueeze(1)
    rows = torch.where(inwin, w.start.unsqueeze(1) + ar,
                       torch.full((), pad_row, dtype=torch.long, device=ar.device))
    return rows, inwin


SHUFFLES = ("epoch", "once", "none")


def batches(n: int, batch_size: int, *, seed: int | None, epoch: int = 0, rank: int = 0, world: int = 1,
            device: torch.device | str = "cpu", shuffle: str = "epoch", drop_last: bool = False
            ) -> Iterator[torch.Tensor]:
    """Window index batches for one epoch. ``seed=None``: in order (evaluation).

    ``shuffle``: ``epoch`` — a new permutation every epoch (depends only on (seed, epoch), so a
    resumed run sees the same order as an uninterrupted one); ``once`` — one permutation drawn from
    the seed, the same batches in the same order every epoch (RJCMA's code shuffles its window list
    once per fold); ``none`` — enumeration order (the RJA/DCA code, ``shuffle: false``).
    ``drop_last`` drops a final batch smaller than ``batch_size`` (the JCA code).

    Several ranks (DDP): ``batch_size`` is the *global* batch. The global batches are exactly the
    one-process ones; rank ``r`` takes ``batch[r::world]`` of each, so the ranks together see the
    same windows per step as one process does and DDP's averaged gradient is the one-process
    gradient (for a loss that is a mean over windows). A batch is first cut to a multiple of
    ``world`` (every rank gets the same count); one smaller than ``world`` is skipped, on every
    rank alike. Why: with an interleaved per-rank slice, ``--batch-size`` would silently mean a
    per-rank batch, and 2 ranks would train another experiment than one process.
    """
    if shuffle not in SHUFFLES:
        raise ValueError(f"unknown shuffle policy {shuffle!r}; use one of {', '.join(SHUFFLES)}")
    if seed is None or shuffle == "none":
        order = torch.arange(n)
    else:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + (int(epoch) if shuffle == "epoch" else 0))
        order = torch.randperm(n, generator=g)
    order = order.to(device)
    end = len(order) - len(order) % batch_size if drop_last else len(order)
    for i in range(0, end, batch_size):
        b = order[i: i + batch_size]
        if world > 1:
            b = b[: len(b) - len(b) % world]
            if len(b) == 0:
                continue
            b = b[rank::world]
        yield b


def n_batches(n: int, batch_size: int, world: int = 1, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields per rank (the same on every rank)."""
    full, rest = divmod(int(n), int(batch_size))
    if drop_last or rest == 0:
        return full
    return full + (1 if rest >= max(1, int(world)) else 0)


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
        # the masked sum as a (1 x clip_len) @ (clip_len x D) product per clip: no (B, T, D) temporary
        # (cheaper than multiply-then-sum: BENCHMARKS.md, "against modules of the authors' layer structure")
        xs[m] = torch.matmul(w.transpose(2, 3), t.reshape(B, L, clip_len, -1)).squeeze(2) / n.clamp_min(1)
        ms[m] = n.squeeze(-1) > 0
    return xs, ms


def expand_clips(y: torch.Tensor, clip_len: int, frames: int) -> torch.Tensor:
    """Per-token predictions (B, L, C) back to per-frame (B, frames, C): every frame of a clip
    gets its clip's prediction (overlapping windows then average them per frame)."""
    return y.repeat_interleave(clip_len, dim=1)[:, :frames]
