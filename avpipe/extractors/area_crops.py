"""Many rectangles of one frame area-resampled to a square side in one go, equal bit for bit to
PyTorch's ``F.interpolate(mode="area")`` of each rectangle.

Why: MTCNN's R-net and O-net inputs are the candidate boxes' crops resampled to 24×24 / 48×48 by
``interpolate(mode="area")`` (adaptive average pooling), one call per box — per call, four small
tensor operations (slice, NCHW copy, float, pool) whose dispatch costs more than their arithmetic
on ~100-px crops. Here every crop comes from one integral image (summed-area table) of the region
the crops cover: each output pixel is an integer sum read off it (whole rows of the table first,
then two reads per pixel), then divided as the pooling kernel divides. The work grows with the
number of crops times the *width of that region*, so it suits crops clustered on one face (the
cascade's candidates on a tracked frame), not crops spread over a whole frame.

Why it is exact, not merely close: the pixels are integers, so every bin sum is an exact integer
(int32/int64 here, float32 in PyTorch's kernel: exact while a bin's sum stays below 2**24, i.e.
bins under ~65,000 pixels — boxes under ~6,000 px a side at 24×24), and PyTorch's CPU kernel
returns ``sum / bin_height / bin_width`` in float32, which is what :func:`area_crops` computes.
Its bins are PyTorch's: output ``i`` of ``n`` inputs to ``m`` outputs averages inputs
``floor(i*n/m)`` to ``ceil((i+1)*n/m)`` (exclusive), so bins overlap when ``m`` does not divide
``n`` and repeat pixels when upsampling (crops smaller than the side).
"""
from __future__ import annotations

import numpy as np

_INT32_MAX = 2**31 - 1


def area_bins(n: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-average-pooling bins from ``n[k]`` inputs to ``side`` outputs: ``(start, end)``,
    each (K, side) int64, end exclusive (PyTorch's formula)."""
    i = np.arange(side, dtype=np.int64)[None, :]
    n = np.asarray(n, np.int64).reshape(-1, 1)
    return (i * n) // side, -((-(i + 1) * n) // side)


def area_crops(frame: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray,
               side: int) -> np.ndarray:
    """Crops ``frame[y0[k]:y1[k], x0[k]:x1[k]]`` of an (H, W, C) uint8 frame, each area-resampled
    to ``side`` × ``side``: (K, C, side, side) float32, C-contiguous (NCHW, as the nets take it).

    Every crop must be non-empty and inside the frame (``0 <= y0 < y1 <= H``, the same for x):
    MTCNN's ``pad`` clips boxes to the frame before cropping, and a crop that is not there is a
    caller's bug, so it raises ``ValueError`` rather than reading clamped pixels."""
    if frame.ndim != 3 or frame.dtype != np.uint8:
        raise ValueError(f"area_crops takes an (H, W, C) uint8 frame, got {frame.dtype} {frame.shape}")
    if side < 1:
        raise ValueError(f"area_crops: side must be >= 1, got {side}")
    y0, y1, x0, x1 = (np.asarray(v, np.int64).reshape(-1) for v in (y0, y1, x0, x1))
    if not len(y0) == len(y1) == len(x0) == len(x1):
        raise ValueError("area_crops: y0, y1, x0, x1 must have one entry per crop")
    H, W, C = frame.shape
    if len(y0) == 0:
        return np.zeros((0, C, side, side), np.float32)
    bad = (y0 < 0) | (y1 > H) | (y1 <= y0) | (x0 < 0) | (x1 > W) | (x1 <= x0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"area_crops: crop {k} rows {y0[k]}:{y1[k]}, cols {x0[k]}:{x1[k]} is empty or "
                         f"outside the {H}x{W} frame")
    # integral image of the region all crops cover, channels first, a zero row and column in
    # front: I[c, r, x] = sum of region[:r, :x, c]
    ry0, ry1, rx0, rx1 = int(y0.min()), int(y1.max()), int(x0.min()), int(x1.max())
    hh, ww = ry1 - ry0, rx1 - rx0
    acc = np.int32 if 255 * hh * ww <= _INT32_MAX else np.int64
    integral = np.zeros((C, hh + 1, ww + 1), acc)
    np.cumsum(frame[ry0:ry1, rx0:rx1].transpose(2, 0, 1), 1, dtype=acc, out=integral[:, 1:, 1:])
    np.cumsum(integral[:, 1:, 1:], 2, out=integral[:, 1:, 1:])
    K = len(y0)
    rs, re = area_bins(y1 - y0, side)
    cs, ce = area_bins(x1 - x0, side)
    # rows first (whole rows of the table: contiguous copies): per crop and output row, the bin's
    # sums over every column prefix, D[c, k, i, x] = I[c, row_end, x] - I[c, row_start, x]
    rows = np.concatenate([(y0 - ry0)[:, None] + re, (y0 - ry0)[:, None] + rs], 1).reshape(-1)
    d = np.take(integral, rows, axis=1).reshape(C, K, 2, side, ww + 1)
    d = (d[:, :, 0] - d[:, :, 1]).reshape(C, -1)
    # then columns: two scalar reads per output pixel
    base = (np.arange(K)[:, None, None] * side + np.arange(side)[None, :, None]) * (ww + 1)
    c0 = ((x0 - rx0)[:, None] + cs)[:, None, :]
    c1 = ((x0 - rx0)[:, None] + ce)[:, None, :]
    sums = np.take(d, base + c1, axis=1) - np.take(d, base + c0, axis=1)  # (C, K, side, side)
    out = np.ascontiguousarray(sums.transpose(1, 0, 2, 3), dtype=np.float32)  # exact: sums < 2**24
    # the pooling kernel's own division, in its order and precision
    out /= (re - rs).astype(np.float32)[:, None, :, None]
    out /= (ce - cs).astype(np.float32)[:, None, None, :]
    return out
