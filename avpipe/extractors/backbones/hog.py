"""OpenFace-style HOG of the aligned face: no weights, deterministic, cheap.

OpenFace stores a HOG of its 112×112 similarity-aligned face (8×8-pixel cells). Here: the crop
is resized to 112×112, converted to grey, and described by OpenCV's HOGDescriptor with 8×8
cells, 16×16 blocks, stride 8, 9 unsigned orientation bins, L2-Hys → 13·13·36 = 6084 values.
OpenCV rather than scikit-image because skimage is only in the ``sample`` extra.
"""
from __future__ import annotations

import numpy as np

from avpipe.extractors.backbones.base import Backbone, register_backbone, resize_crops


@register_backbone
class HogBackbone(Backbone):
    name = "hog"
    dim = 13 * 13 * 36
    description = "HOG of the aligned 112x112 grey face (OpenCV; 8px cells, 16px blocks, 9 bins)"

    def __init__(self) -> None:
        self._hog = None

    def load(self, device: str, weights: dict[str, str]) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor((112, 112), (16, 16), (8, 8), (8, 8), 9)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import cv2

        if self._hog is None:
            self.load("cpu", {})
        crops = resize_crops(np.asarray(crops, np.uint8), 112)
        out = np.zeros((len(crops), self.dim), np.float32)
        for i, c in enumerate(crops):
            grey = cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)
            out[i] = self._hog.compute(grey).reshape(-1)
        return out
