"""One prediction path: a trained run's model applied to cached features.

Why one class: ``predict``, the ABAW submission writer, ``evaluate`` and ``render --run`` all take
the same steps — the run folder and its checkpoint give the model, the training statistics and
the window; the run's config gives one feature fingerprint per modality; a bank of tracks is read
from the cache with those fingerprints, normalised with those statistics, and overlapping windows
are predicted and averaged per frame. Written once here, the four cannot drift apart: another hop,
window or statistics in one of them would give other numbers for the same video.

A :class:`Predictor` holds the model and reads from one cache (``cache``: the run's recorded one
unless given). Predictions are the model's raw outputs, one (n_frames, 2) valence/arousal array per
track; a track is a cached video, or one person of it (``person``: ``"left"``/``"right"``, the face
track bound to that side, see :mod:`avpipe.fusion.persons`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import FeatureBank, InMemoryBanks, Stats, TrackRef, load_bank
from avpipe.fusion.inference import build_model_from_checkpoint, load_run, predict_provider, resolve_device
from avpipe.fusion.segments import plan_for
from avpipe.fusion.labels import DEFAULT_TOLERANCE
from avpipe.fusion.run import RunDir
from avpipe.fusion.source import CacheSource, FeatureSource
from avpipe.pipeline.person_tracks import SIDES_ATTR

__all__ = ["Fingerprints", "Predictor", "TrackPredictions", "VideoPrediction", "persons_of"]

#: modality -> (stage, fingerprint): which cached features a modality is read from.
Fingerprints = Mapping[str, tuple[str, str]]
#: Per-track predictions, labels and label masks, as :func:`predict_provider` returns them.
TrackPredictions = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class VideoPrediction:
    """One track's predictions: ``values`` (n_frames, 2) raw valence/arousal, and per modality
    whether the model had that input at each frame (``present``: a no-face frame is False for
    the visual modality, so a reader can tell a prediction without a face from one with)."""

    name: str
    values: np.ndarray
    present: dict[str, np.ndarray]


def persons_of(source: FeatureSource, fingerprints: Fingerprints, key: str) -> list[str | None]:
    """Whose predictions a video gets: ``["left", "right"]`` (those bound) when a person-aware
    feature of the run has sides for it, else ``[None]`` (the main face, one output)."""
    cache = getattr(source, "cache", None)
    if cache is None:
        return [None]
    for stage, fp in fingerprints.values():
        try:
            sides = dict(cache.read(stage, key, fingerprint=fp).attrs.get(SIDES_ATTR) or {})
        except Exception:  # noqa: BLE001 - a missing entry is reported by the feature check
            continue
        if sides:
            return sorted(sides)
    return [None]


class Predictor:
    """A trained run, ready to predict from a cache (see the module docstring)."""

    def __init__(self, run: RunDir, config: TrainConfig, model: torch.nn.Module, stats: Stats, window: int,
                 device: torch.device, *, source: FeatureSource | None = None) -> None:
        self.run, self.config, self.model, self.stats = run, config, model, stats
        self.window, self.device = int(window), device
        self._source = source
        #: the run's features: the fingerprints it was trained on, in its modality order (the
        #: first modality's row count is a video's frame count)
        self.fingerprints: dict[str, tuple[str, str]] = {
            m: (d["stage"], d["fingerprint"]) for m, d in config.resolved_features.items()}

    @classmethod
    def from_run(cls, run_path: str | Path, *, cache: str | Path | None = None, source: FeatureSource | None = None,
                 device: str | torch.device = "auto", which: str = "best") -> Predictor:
        """The run's ``which`` checkpoint ("best" or "last") on ``device``, reading features from
        ``source``, or else from the cache at ``cache``, or else from the cache the run records.

        Raises :class:`~avpipe.fusion.run.RunConflictError` when the path is not a run folder and
        :class:`~avpipe.fusion.run.CheckpointError` when the checkpoint is missing or refused."""
        dev = resolve_device(device) if isinstance(device, str) else device
        run, cfg = load_run(run_path)
        if cache:
            cfg.cache = str(cache)  # where this predictor reads; the run folder is not changed
        ck = run.load_checkpoint(which, map_location=dev)
        return cls(run, cfg, build_model_from_checkpoint(ck, dev), Stats.from_dict(ck["stats"]), ck["window"], dev,
                   source=source)

    # -- where features come from -------------------------------------------------------------
    @property
    def source(self) -> FeatureSource:
        """The feature source, opened on first use. Why lazily: ``predict`` extracts missing
        features into the cache first, and a source opened before that would not see them."""
        if self._source is None:
            self._source = CacheSource(self.config.cache)
        return self._source

    @property
    def hop(self) -> int:
        """Frames between window starts when predicting: the run's ``eval_hop`` (else ``hop``)."""
        return int(self.config.eval_hop or self.config.hop)

    @property
    def batch_size(self) -> int:
        """Windows per forward pass: twice the training batch (no gradients are kept)."""
        return int(self.config.batch_size or 32) * 2

    def missing(self, video: str) -> list[str]:
        """The modalities whose features (with the run's fingerprints) the cache lacks for ``video``."""
        return [m for m, (s, f) in self.fingerprints.items() if not self.source.has(s, f, video)]

    def persons(self, video: str) -> list[str | None]:
        """Whose predictions ``video`` gets (:func:`persons_of`)."""
        return persons_of(self.source, self.fingerprints, video)

    # -- predictions --------------------------------------------------------------------------
    def load(self, tracks: Sequence[TrackRef], *, fingerprints: Fingerprints | None = None,
             tolerance: int = DEFAULT_TOLERANCE) -> FeatureBank:
        """The tracks' features (and labels, where a track has them) in one bank, not normalised."""
        return load_bank(self.source, dict(fingerprints or self.fingerprints), list(tracks), device=self.device,
                         dtype=self.config.feature_dtype, tolerance=tolerance)

    def predict_bank(self, bank: FeatureBank) -> TrackPredictions:
        """Normalise ``bank`` (in place) with the training statistics and predict every track."""
        bank.set_stats(self.stats)
        segments = plan_for(self.config, self.source, sorted(set(bank.videos)))  # None: fixed windows
        return predict_provider(self.model, InMemoryBanks(bank), self.window, self.hop, self.batch_size,
                                segments=segments)

    def predict_tracks(self, tracks: Sequence[TrackRef], *, fingerprints: Fingerprints | None = None,
                       tolerance: int = DEFAULT_TOLERANCE) -> TrackPredictions:
        """Predictions, labels and label masks of every track, by track name. ``fingerprints``:
        the run's own unless given; ``tolerance``: how many frames labels may differ in length."""
        return self.predict_bank(self.load(tracks, fingerprints=fingerprints, tolerance=tolerance))

    def predict(self, video: str, person: str | None = None, *, name: str | None = None) -> VideoPrediction:
        """One cached video's predictions (``video``: its key or content id), from ``person``'s
        face track when given. ``name`` names the track (default ``video``, ``video#person``)."""
        name = name or (video if person is None else f"{video}#{person}")
        bank = self.load([TrackRef(name, video, None, person=person)])
        present = {m: v[:-1].cpu().numpy() for m, v in bank.valid.items()}  # minus the sentinel row
        preds, _, _ = self.predict_bank(bank)
        return VideoPrediction(name, preds[name], present)

