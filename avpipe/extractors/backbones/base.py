"""Backbone interface and registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from avpipe.pipeline.stage import StageError


class BackboneUnavailable(StageError):
    """An optional dependency of a backbone is missing (message says which extra to install)."""


class Backbone(ABC):
    """One embedding model over aligned face crops.

    * ``name`` — registry name (enters the ``visual`` fingerprint through the config);
    * ``dim`` — embedding size;
    * ``weights_id(weights)`` — checksum of the weights in use (None: no weights); raises
      :class:`~avpipe.extractors.weights.WeightsMissingError` when they are absent — never a
      silent random fallback;
    * ``load(device, weights)`` — build the model once per worker;
    * ``embed(crops)`` — ``(N, S, S, 3)`` uint8 RGB → ``(N, dim)`` float32, deterministic.
    """

    name: ClassVar[str]
    dim: ClassVar[int]
    description: ClassVar[str] = ""
    weights_name: ClassVar[str | None] = None  # its entry in the weights registry (None: no weights)
    licence: ClassVar[str] = ""

    def weights_id(self, weights: dict[str, str]) -> str | None:
        return None

    def load(self, device: str, weights: dict[str, str]) -> None:
        """Build the model. Default: nothing to load."""

    @abstractmethod
    def embed(self, crops: np.ndarray) -> np.ndarray:
        ...


_BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    if cls.name in _BACKBONES and _BACKBONES[cls.name] is not cls:
        raise ValueError(f"backbone {cls.name!r} registered twice")
    _BACKBONES[cls.name] = cls
    return cls


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> type[Backbone]:
    if name not in _BACKBONES:
        raise KeyError(f"unknown visual backbone {name!r}; known: {', '.join(backbone_names())}")
    return _BACKBONES[name]


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    return get_backbone(name)(**kwargs)


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, S, S, 3) uint8 crops to ``size`` (area when shrinking, cubic when growing)."""
    import cv2

    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops]) if len(crops) \
        else np.zeros((0, size, size, 3), np.uint8)
