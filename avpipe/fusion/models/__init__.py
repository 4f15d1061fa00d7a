"""Fusion model registry (timm-style, :mod:`avpipe.registry`): every model module registers its
class by name, and each built-in name has its line in :data:`BUILTIN_MODELS`, so names are listed
and ``--fusion`` is checked without importing torch (docs/extending.md). Importing this package
imports no model module and no torch; the base types load on first use.

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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from avpipe.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.fusion.models.base import FusionModel

#: The built-in models: name -> "module:Class". Adding a model is its module plus one line here
#: (docs/extending.md). ``--fusion`` takes its choices from this table (through the registry)
#: without importing torch, so a name it accepts is always one :func:`get_model_class` finds.
BUILTIN_MODELS: dict[str, str] = {
    "jca": "avpipe.fusion.models.jca:JCA",
    "rja": "avpipe.fusion.models.rja:RJA",
    "rja-shared": "avpipe.fusion.models.rja:RJAShared",
    "rjcma": "avpipe.fusion.models.rjcma:RJCMA",
    "rjcma-shared": "avpipe.fusion.models.rjcma:RJCMAShared",
    "iaca": "avpipe.fusion.models.iaca:IACA",
    "dca": "avpipe.fusion.models.iaca:DCA",
    "maven": "avpipe.fusion.models.maven:MAVEN",
    "maven-paper": "avpipe.fusion.models.maven:MAVENPaper",
    "maven-frames": "avpipe.fusion.models.maven:MAVENFrames",
    "ca": "avpipe.fusion.models.ca:CrossAttention",
    "concat": "avpipe.fusion.models.baselines:Concat",
    "audio": "avpipe.fusion.models.baselines:AudioOnly",
    "visual": "avpipe.fusion.models.baselines:VisualOnly",
    "text": "avpipe.fusion.models.baselines:TextOnly",
}


def _check_model(name: str, cls: Any) -> None:
    from avpipe.fusion.models.base import FusionModel

    if not (isinstance(cls, type) and issubclass(cls, FusionModel)) or getattr(cls, "name", None) != name:
        raise TypeError(f"fusion model {name!r}: {cls!r} is not a FusionModel class named {name!r}")


MODELS: Registry[type[FusionModel]] = Registry("fusion model", BUILTIN_MODELS, check=_check_model)
#: the order of ``avpipe train --list``: published models first, then variants, then baselines
LIST_ORDER = ("jca", "rja", "rjcma", "dca", "maven", "rja-shared", "rjcma-shared", "iaca", "maven-paper", "maven-frames",
              "ca", "concat", "audio", "visual", "text")


def register_model(cls: type[FusionModel]) -> type[FusionModel]:
    """Class decorator: make a model available by ``cls.name`` (same class again: no-op; another
    class under a taken name raises)."""
    return MODELS.register(cls.name, cls, info=cls.info, modalities=tuple(cls.modalities))


def model_names() -> list[str]:
    """Every model name (built-in or registered), without importing torch or any model module."""
    return MODELS.names()


def model_registry() -> dict[str, type[FusionModel]]:
    """Every model class by name (imports the model modules, hence torch)."""
    return MODELS.load_all()


def get_model_class(name: str) -> type[FusionModel]:
    """The class of ``name``; unknown: :class:`~avpipe.registry.UnknownNameError` (a KeyError)
    naming the closest known model."""
    return MODELS.get(name)


def create_model(name: str, dims: Mapping[str, int], window: int, **options: Any) -> FusionModel:
    """Build a registered model; the name's ``preset`` options apply first, ``options`` override."""
    cls = get_model_class(name)
    return cls(dims=dict(dims), window=window, **{**cls.preset, **options})


def check_modalities(name: str, available: Mapping[str, str], options: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`MissingModalityError` naming the stage to extract for each missing modality.

    ``available`` maps modality -> stage name of the feature set.
    """
    from avpipe.fusion.models.base import MissingModalityError
    from avpipe.fusion.source import DEFAULT_STAGES

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

    entries = {e.name: e for e in MODELS.list()}
    names = [n for n in LIST_ORDER if n in entries] + sorted(set(entries) - set(LIST_ORDER))
    lines = []
    for n in names:
        cls, d = entries[n].obj, model_defaults(n)
        info = entries[n].metadata.get("info", cls.info)
        clip = int(d.get("clip_len") or 1)
        if (getattr(cls, "preset", None) or {}).get("tokens") == "segment":
            tok = f"per transcript segment, <= {d['window']}f"
        elif clip > 1:
            tok = f"{d['window']}f/{clip}={d['window'] // clip} tokens"
        else:
            tok = f"{d['window']}f per-frame"
        lines.append(f"{n:13s} {'+'.join(m[0] for m in cls.modalities):5s} window {tok}, batch {d['batch_size']}, "
                     f"lr {d['lr']:g}, recipe {default_recipe(n)} - {info.summary if info else ''}")
        if verbose and info is not None:
            lines.append(f"{'':13s} paper: {info.paper}")
            lines.append(f"{'':13s} as the authors' code: {info.code or 'no public code'}")
            lines.append(f"{'':13s} avpipe's own: {info.ours}")
    return lines


_LAZY_NAMES = {"FusionModel": "avpipe.fusion.models.base", "MissingModalityError": "avpipe.fusion.models.base",
               "ModelInfo": "avpipe.fusion.models.base", "DEFAULT_STAGES": "avpipe.fusion.source"}


def __getattr__(name: str) -> Any:
    """The model base types on first use: importing this package (for ``--fusion``'s names) must
    not import torch."""
    if name in _LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BUILTIN_MODELS", "MODELS", "FusionModel", "MissingModalityError", "ModelInfo", "register_model",
           "model_names", "model_registry", "get_model_class", "create_model", "check_modalities",
           "model_defaults", "model_listing", "DEFAULT_STAGES"]
