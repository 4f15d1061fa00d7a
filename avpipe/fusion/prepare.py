"""Data preparation for training and evaluation: labels → splits → cached videos → fingerprints.

Why a module of its own: training, evaluation, sweeps and benchmarks all start from the same
:func:`prepare` — which labelled tracks go to which split and which cached features (one
fingerprint per modality) they are read with — and none of them should import the training loop
to get it. Nothing here reads feature data; :mod:`avpipe.fusion.data` does that.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import TrackRef
from avpipe.fusion.labels import LabelError, assign_splits, load_labels, match_videos
from avpipe.fusion.models import MissingModalityError, get_model_class
from avpipe.fusion.presets import paper_features
from avpipe.fusion.source import CacheSource, FeatureError, FeatureSet, FeatureSource

__all__ = ["Prepared", "feature_configs", "open_source", "prepare"]


@dataclass
class Prepared:
    """A run's data before any feature is read: the labelled tracks of each split and the one
    fingerprint per modality they are read with."""

    train: list[TrackRef]
    val: list[TrackRef]
    fingerprints: dict[str, tuple[str, str]]  # modality -> (stage, fingerprint)
    modalities: tuple[str, ...]


def open_source(cfg: TrainConfig) -> FeatureSource:
    """The feature source of the config's cache."""
    return CacheSource(cfg.cache)


def _split_hint(cfg: TrainConfig, refs: list[TrackRef]) -> str:
    """What to do when one split is empty (most often: one or very few labelled videos)."""
    if not refs:
        return ""
    n_videos = len({r.labels.video_stem for r in refs})
    how = (f"; the split is by video ({n_videos} labelled video(s) here, val_fraction {cfg.val_fraction}): "
           "name the validation videos with --split-file (lines 'name,split', split train or val)")
    if n_videos > 1:
        how += " or change val_fraction in --config"
    else:
        how += ", or label a second video: one video cannot be both trained and validated on"
    return how


def feature_configs(source: FeatureSource, fingerprints: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """stage -> {fingerprint, version, config} of each resolved feature and everything upstream of
    it, from the cache index. Why: a run must name its inputs by what computes them, not only by
    fingerprints that another cache does not have (docs/data.md#predictions)."""
    cache = getattr(source, "cache", None)
    if cache is None:  # an in-memory source: nothing recorded to extract with
        return {}
    rows = {f.fingerprint: f for f in cache.fingerprints()}
    out: dict[str, dict[str, Any]] = {}

    def add(fp: str) -> None:
        info = rows.get(fp)
        if info is None or info.stage in out:
            return
        out[info.stage] = {"fingerprint": fp, "version": str(info.version), "config": dict(info.config)}
        for up in (info.upstream or {}).values():
            add(up)

    for _, fp in fingerprints.values():
        add(fp)
    return out


def prepare(cfg: TrainConfig, source: FeatureSource) -> Prepared:
    """Labels → splits → cached videos → one fingerprint per modality (recorded in ``cfg``)."""
    cls = get_model_class(cfg.fusion)
    mods = cls.required_modalities(cfg.model)
    fset = FeatureSet.parse(cfg.features or None, mods).subset(mods)
    tracks = assign_splits(load_labels(cfg.labels, cfg.clip_labels), cfg.split_file, cfg.val_fraction, cfg.seed)
    keymap = match_videos(tracks, [k for k, _ in source.videos()])
    unmatched = [t.name for t in tracks if t.name not in keymap and t.split in ("train", "val")]
    if unmatched:
        warnings.warn(f"{len(unmatched)} label track(s) have no video in the cache and are skipped "
                      f"(e.g. {unmatched[:3]})", stacklevel=2)
    refs = [TrackRef(t.name, keymap[t.name], t) for t in tracks if t.name in keymap]
    train = [r for r in refs if r.labels.split == "train"]
    val = [r for r in refs if r.labels.split == "val"]
    if not train or not val:
        raise LabelError(f"need labelled videos in both train and val splits; got {len(train)} train, "
                         f"{len(val)} val (matched {len(refs)} of {len(tracks)} label tracks to cached videos)"
                         + _split_hint(cfg, refs))
    videos = sorted({r.video for r in train + val})
    fingerprints: dict[str, tuple[str, str]] = {}
    paper = None if cfg.features else paper_features(cfg.fusion, mods, source, videos)
    if paper is not None:  # a cache extracted with --config <fusion>: that paper's inputs
        fset, fingerprints = paper
    for m in (m for m in mods if m not in fingerprints):
        ref = fset.refs[m]
        try:
            fingerprints[m] = (ref.stage, source.resolve(ref, videos))
        except FeatureError as e:
            raise MissingModalityError(
                f"model {cfg.fusion!r} needs modality {m!r} (stage {ref.stage!r}); run: avpipe extract "
                f"--stages {ref.stage} --videos DIR --cache {cfg.cache}  [{e}]") from e
    cfg.features = fset.to_dict()
    cfg.resolved_features = {m: {"stage": s, "fingerprint": f} for m, (s, f) in fingerprints.items()}
    cfg.feature_configs = feature_configs(source, fingerprints) or cfg.feature_configs
    return Prepared(train, val, fingerprints, mods)
