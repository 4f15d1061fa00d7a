"""OpenFace-style HOG of the aligned face: no weights, deterministic, cheap.

OpenFace stores a HOG of its 112×112 similarity-aligned face (8×8-pixel cells). Here: the crop
is resized to 112×112, converted to grey, and described by a Dalal–Triggs HOG: 8×8-pixel cells,
2×2-cell blocks with a one-cell stride, 9 unsigned orientation bins (votes split linearly
between the two nearest bins), L2-Hys block normalisation → 13·13·36 = 6084 values.
Plain numpy: skimage is only in the ``sample`` extra and OpenCV 5 dropped ``HOGDescriptor``.
"""
from __future__ import annotations

import numpy as np

from avpipe.extractors.backbones.base import Backbone, register_backbone, resize_crops


@register_backbone
class HogBackbone(Backbone):
    name = "hog"
    dim = 13 * 13 * 36
    description = "HOG of the aligned 112x112 grey face (8px cells, 2x2-cell blocks, 9 bins, L2-Hys)"
    licence = "no weights"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = resize_crops(np.asarray(crops, np.uint8), 112)
        out = np.zeros((len(crops), self.dim), np.float32)
        for i, c in enumerate(crops):
            out[i] = hog_descriptor(c)
        return out


def hog_descriptor(rgb: np.ndarray, cell: int = 8, bins: int = 9, eps: float = 1e-6) -> np.ndarray:
    """Dalal–Triggs HOG of one RGB image (H, W multiples of ``cell``)."""
    g = (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1, :] = g[2:, :] - g[:-2, :]
    mag = np.hypot(gx, gy)
    ang = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    pos = ang / (180.0 / bins) - 0.5
    lo = np.floor(pos).astype(np.int64)
    w_hi = pos - lo
    h, w = g.shape
    ch, cw = h // cell, w // cell
    hist = np.zeros((ch, cw, bins), np.float32)
    cy = (np.arange(h) // cell)[:, None].repeat(w, 1)
    cx = (np.arange(w) // cell)[None, :].repeat(h, 0)
    for b, wt in ((lo % bins, 1.0 - w_hi), ((lo + 1) % bins, w_hi)):
        np.add.at(hist, (cy, cx, b), (mag * wt).astype(np.float32))
    blocks = np.concatenate([hist[:-1, :-1], hist[:-1, 1:], hist[1:, :-1], hist[1:, 1:]], axis=-1)
    blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + eps ** 2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + eps ** 2)
    return blocks.reshape(-1).astype(np.float32)
