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
    # integral image of the region all crops cover (channels last)
    ry0, ry1, rx0, rx1 = int(y0.min()), int(y1.max()), int(x0.min()), int(x1.max())
    integral = integral_image(frame[ry0:ry1, rx0:rx1])
    ww = rx1 - rx0
    K = len(y0)
    rs, re = area_bins(y1 - y0, side)
    cs, ce = area_bins(x1 - x0, side)
    # rows first (whole rows of the table: contiguous copies): per crop and output row, the bin's
    # sums over every column prefix, D[k, i, x, c] = I[row_end, x, c] - I[row_start, x, c]
    rows = np.concatenate([(y0 - ry0)[:, None] + re, (y0 - ry0)[:, None] + rs], 1).reshape(-1)
    d = np.take(integral, rows, axis=0).reshape(K, 2, side, ww + 1, C)
    d = (d[:, 0] - d[:, 1]).reshape(-1, C)
    # then columns: two reads (of C values) per output pixel
    base = (np.arange(K)[:, None, None] * side + np.arange(side)[None, :, None]) * (ww + 1)
    c0 = ((x0 - rx0)[:, None] + cs)[:, None, :]
    c1 = ((x0 - rx0)[:, None] + ce)[:, None, :]
    sums = np.take(d, base + c1, axis=0) - np.take(d, base + c0, axis=0)  # (K, side, side, C)
    out = np.ascontiguousarray(sums.transpose(0, 3, 1, 2), dtype=np.float32)  # exact: sums < 2**24
    # the pooling kernel's own division, in its order and precision
    out /= (re - rs).astype(np.float32)[:, None, :, None]
    out /= (ce - cs).astype(np.float32)[:, None, None, :]
    return out



def integral_image(frame: np.ndarray) -> np.ndarray:
    """Summed-area table of an (H, W, C) uint8 image with a zero row and column in front,
    channels last: ``I[r, x, c]`` = sum of ``frame[:r, :x, c]`` (H + 1, W + 1, C); int32 where no
    sum can overflow it, else int64. (Channels last: both running sums then walk contiguous
    memory, much faster than over a channels-first view.)"""
    H, W, C = frame.shape
    integral = np.zeros((H + 1, W + 1, C), np.int32 if 255 * H * W <= _INT32_MAX else np.int64)
    integral[1:, 1:] = frame
    np.cumsum(integral, 0, out=integral)
    np.cumsum(integral, 1, out=integral)
    return integral


def area_resize(integral: np.ndarray, out_h: int, out_w: int) -> np.ndarray | None:
    """The whole image behind ``integral`` (:func:`integral_image`) area-resampled to ``out_h`` ×
    ``out_w``: (1, C, out_h, out_w) float32, C-contiguous, equal bit for bit to
    ``F.interpolate(image, (out_h, out_w), mode="area")`` of the image as float NCHW.

    Why: MTCNN's image pyramid is ~10 area resizes of the whole frame per full cascade, and
    PyTorch's pooling kernel walks every bin of every level; here a level is two gathers from one
    table. Exact for the same reason as :func:`area_crops`. None when a bin is so large (over
    ~65,000 pixels) that PyTorch's float32 sum would round, so that the two could differ: the
    caller then resizes with PyTorch; None for a 1 × 1 output too (PyTorch takes the mean there,
    which sums in another order)."""
    if out_h == 1 and out_w == 1:
        return None
    H1, W1, C = integral.shape
    rs, re = area_bins(np.array([H1 - 1]), out_h)
    cs, ce = area_bins(np.array([W1 - 1]), out_w)
    rs, re, cs, ce = rs[0], re[0], cs[0], ce[0]
    if 255 * int((re - rs).max()) * int((ce - cs).max()) >= 2**24:
        return None
    d = np.take(integral, re, axis=0) - np.take(integral, rs, axis=0)  # (out_h, W + 1, C)
    sums = np.take(d, ce, axis=1) - np.take(d, cs, axis=1)  # (out_h, out_w, C)
    out = np.ascontiguousarray(sums.transpose(2, 0, 1), dtype=np.float32)
    out /= (re - rs).astype(np.float32)[None, :, None]
    out /= (ce - cs).astype(np.float32)[None, None, :]
    return out[None]
