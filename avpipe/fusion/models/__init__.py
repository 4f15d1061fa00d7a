"""Fusion model registry (timm-style): every model module registers its class by name.

One signature for all models::

    model = create_model(name, dims={"visual": 512, "audio": 128}, window=300, **options)
    y = model(x, mask)   # x: {modality: (B, T, D)}, mask: {modality: (B, T) bool} -> (B, T, 2)

A model declares the modalities it needs (``modalities``) and its optimiser/schedule defaults
(``train_defaults``, docs/models.md#training-defaults); the trainer reads both. Missing modalities fail early with
the stage to extract (:func:`check_modalities`).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from avpipe.fusion.models.base import FusionModel, MissingModalityError
from avpipe.fusion.source import DEFAULT_STAGES

_REGISTRY: dict[str, type[FusionModel]] = {}
_MODULES = ("jca", "rja", "rjcma", "iaca", "maven", "baselines", "ca")


def register_model(cls: type[FusionModel]) -> type[FusionModel]:
    """Class decorator: make a model available by ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"model {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    for m in _MODULES:
        importlib.import_module(f"avpipe.fusion.models.{m}")


def model_registry() -> dict[str, type[FusionModel]]:
    _load_builtin()
    return dict(_REGISTRY)


def get_model_class(name: str) -> type[FusionModel]:
    reg = model_registry()
    if name not in reg:
        raise KeyError(f"unknown fusion model {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name]


def create_model(name: str, dims: Mapping[str, int], window: int, **options: Any) -> FusionModel:
    cls = get_model_class(name)
    return cls(dims=dict(dims), window=window, **options)


def check_modalities(name: str, available: Mapping[str, str], options: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`MissingModalityError` naming the stage to extract for each missing modality.

    ``available`` maps modality -> stage name of the feature set.
    """
    cls = get_model_class(name)
    need = cls.required_modalities(dict(options or {}))
    for m in need:
        if m not in available:
            stage = DEFAULT_STAGES.get(m, m)
            raise MissingModalityError(
                f"model {name!r} needs modality {m!r} (stage {stage!r}); run: avpipe extract "
                f"--stages {stage} ... and add it to --features ({m}={stage})")



__all__ = ["FusionModel", "MissingModalityError", "register_model", "model_registry",
           "get_model_class", "create_model", "check_modalities", "DEFAULT_STAGES"]
