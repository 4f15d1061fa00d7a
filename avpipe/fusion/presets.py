"""The paper presets on the training side: ``avpipe train --fusion jca`` on a cache extracted with
``--config jca`` reads the features that preset names, under that preset's stage configs.

Why exact: a stage name alone resolves to the stage's *default* config (or to the one fingerprint
covering the videos); a paper's features are other stages (``visual_clip``) or other configs of
the same stage (causal 32-frame log-mel), so they are looked up by the preset's own configs and
used only when every labelled video has them. Otherwise training falls back to the usual default
feature set, unchanged; an explicit ``--features`` always wins.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from avpipe.fusion.source import FeatureError, FeatureSet, FeatureSource, StageRef


def paper_features(fusion: str, modalities: Iterable[str], source: FeatureSource,
                   videos: list[str]) -> tuple[FeatureSet, dict[str, tuple[str, str]]] | None:
    """(feature set, {modality: (stage, fingerprint)}) from the shipped preset named ``fusion``,
    when it names features for every modality and the cache holds them, under the preset's
    configs, for every video; else None."""
    from avpipe.fusion.source import CacheSource
    from avpipe.pipeline.config import paper_preset
    from avpipe.pipeline.types import AmbiguousRead, NotCached

    preset = paper_preset(fusion)
    mods = list(modalities)
    if preset is None or not isinstance(source, CacheSource) or not set(mods) <= set(preset.features):
        return None
    fset = FeatureSet.parse(dict(preset.features), mods).subset(mods)
    resolved: dict[str, tuple[str, str]] = {}
    for m, ref in fset.refs.items():
        try:
            fp = source.cache.resolve(ref.stage, preset)
            resolved[m] = (ref.stage, source.resolve(StageRef(ref.stage, fp), videos))
        except (NotCached, AmbiguousRead, FeatureError, ValueError, KeyError):
            return None
    return fset, resolved


def describe(fusion: str, resolved: dict[str, tuple[str, str]]) -> str:
    """One line for the run log: which preset's features were used."""
    parts = ", ".join(f"{m}={s}@{fp[:12]}" for m, (s, fp) in sorted(resolved.items()))
    return f"features from the {fusion!r} preset (the cache has them): {parts}"


__all__: list[Any] = ["describe", "paper_features"]
