"""Fusion model registry (timm-style): every model module registers its class by name.

One signature for all models::

    model = create_model(name, dims={"visual": 512, "audio": 128}, window=300, **options)
    y = model(x, mask)   # x: {modality: (B, T, D)}, mask: {modality: (B, T) bool} -> (B, T, 2)

A model declares the modalities it needs (``modalities``) and its optimiser/schedule/window
defaults (``train_defaults``); the trainer reads both. Missing modalities fail early with the stage
to extract (:func:`check_modalities`).

Names: a published model's plain name (``jca``, ``rja``, ``rjcma``, ``dca``, ``maven``) builds the
configuration of the authors' released code; avpipe's own variants and reconstructions have names
of their own (``rja-shared``, ``rjcma-shared``, ``iaca``, ``maven-paper``). Each registered class
carries a :class:`ModelInfo` (paper, what matches the code, what is ours); :func:`model_listing`
renders them for ``avpipe train --list`` and ``avpipe train --help``.

How a name trains is its recipe, not the model's: the published names train with their authors'
recipe by default (:mod:`avpipe.fusion.recipes`, docs/recipes.md), the others with avpipe's, whose
values are the ``train_defaults`` declared here (gradient clipping at 1.0, early stopping after
``patience`` epochs, z-scored inputs, …).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from avpipe.fusion.models.base import FusionModel, MissingModalityError, ModelInfo
from avpipe.fusion.source import DEFAULT_STAGES

_REGISTRY: dict[str, type[FusionModel]] = {}
_MODULES = ("jca", "rja", "rjcma", "iaca", "maven", "baselines", "ca")
#: the order of ``avpipe train --list``: published models first, then variants, then baselines
LIST_ORDER = ("jca", "rja", "rjcma", "dca", "maven", "rja-shared", "rjcma-shared", "iaca", "maven-paper", "maven-frames",
              "ca", "concat", "audio", "visual", "text")


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
    """Build a registered model; the name's ``preset`` options apply first, ``options`` override."""
    cls = get_model_class(name)
    return cls(dims=dict(dims), window=window, **{**cls.preset, **options})


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



def model_defaults(name: str) -> dict[str, Any]:
    """The training defaults a name resolves to under its default recipe (generic defaults, the
    model's own, then the authors' recipe for a published name: docs/recipes.md)."""
    from avpipe.fusion.config import GENERIC_DEFAULTS
    from avpipe.fusion.recipes import default_recipe, recipe_defaults

    return {**GENERIC_DEFAULTS, **get_model_class(name).train_defaults,
            **recipe_defaults(name, default_recipe(name))[0]}


def model_listing(verbose: bool = False) -> list[str]:
    """One line per registered name: name, modalities, default window/clip/batch/lr and summary.

    ``verbose`` adds the paper, what matches the authors' code and what is avpipe's own, indented
    under each name (``avpipe train --list``); the short form is what ``train --help`` shows.
    """
    from avpipe.fusion.recipes import default_recipe

    reg = model_registry()
    names = [n for n in LIST_ORDER if n in reg] + sorted(set(reg) - set(LIST_ORDER))
    lines = []
    for n in names:
        cls, d = reg[n], model_defaults(n)
        info = cls.info
        clip = int(d.get("clip_len") or 1)
        tok = f"{d['window']}f/{clip}={d['window'] // clip} tokens" if clip > 1 else f"{d['window']}f per-frame"
        lines.append(f"{n:13s} {'+'.join(m[0] for m in cls.modalities):5s} window {tok}, batch {d['batch_size']}, "
                     f"lr {d['lr']:g}, recipe {default_recipe(n)} - {info.summary if info else ''}")
        if verbose and info is not None:
            lines.append(f"{'':13s} paper: {info.paper}")
            lines.append(f"{'':13s} as the authors' code: {info.code or 'no public code'}")
            lines.append(f"{'':13s} avpipe's own: {info.ours}")
    return lines


__all__ = ["FusionModel", "MissingModalityError", "ModelInfo", "register_model", "model_registry",
           "get_model_class", "create_model", "check_modalities", "model_defaults", "model_listing",
           "DEFAULT_STAGES"]
