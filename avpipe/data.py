"""avpipe's public data API: read cached features for your own models.

Everything a training loop outside avpipe needs, without h5py, sqlite3 or avpipe's internals
(reference and example: docs/data.md)::

    from avpipe.data import FeatureStore, WindowDataset

    store = FeatureStore("cache")                                   # read-only
    v = store.read("clips/a.mp4", {"visual": "visual", "audio": "logmel"}, person="left")
    v.x["visual"], v.mask["visual"], v.timestamps                   # aligned, one row per frame

    ds = WindowDataset("cache", "labels/", {"visual": "visual", "audio": "logmel"},
                       split="train", window=64, hop=32)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, shuffle=True)

Why one module: the trainer and a user's own loop read the same rows the same way (the trainer
loads its banks through :func:`load_windows`), so a model trained outside avpipe sees exactly the
features, masks, person binding and label alignment avpipe's models see.

Reads are exact. A feature is named by a stage (``"visual"``: that stage's fingerprint under the
store's ``config`` — its defaults unless a config file or preset is given — or, for features
ingested without a config, the one fingerprint of the stage that covers every requested video),
or pinned as ``"stage@fingerprint"`` (a unique prefix is enough). When several fingerprints could
be meant the read fails with :class:`DataError` saying once what is ambiguous and how to pick; it
never guesses. Every error of this module is a :class:`DataError` with a one-line message.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avpipe.fusion.data import TrackRef, fit_rows, make_provider, modality_info, track_rows
from avpipe.fusion.labels import DEFAULT_TOLERANCE, UNLABELLED, LabelError, LabelTrack
from avpipe.fusion.source import CacheSource, FeatureError, FeatureSet, FeatureSource
from avpipe.fusion.windows import pool_clips, window_starts
from avpipe.pipeline.person_tracks import TRACK_DATA, TRACK_MASK

__all__ = ["DataError", "FeatureStore", "VideoFeatures", "LabelledTrack", "WindowDataset",
           "InMemoryWindowDataset", "labelled_tracks", "load_windows", "parse_features"]

Features = str | Mapping[str, str] | Sequence[str]
Person = str | int | None


class DataError(LookupError):
    """A read of the data API failed: the message says, on one line, what and how to fix it."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def parse_features(features: Features) -> dict[str, str]:
    """``modality -> "stage[@fingerprint]"`` from any accepted form.

    ``"visual=visual,audio=logmel@3fa2"``, a mapping ``{"audio": "logmel"}``, or a list of stage
    names (each stage is then its own modality: ``["visual", "logmel"]``). The first modality
    is the *reference*: its row count is the video's frame count."""
    if isinstance(features, str):
        if "=" not in features:
            features = [p.strip() for p in features.split(",") if p.strip()]
        else:
            try:
                return FeatureSet.parse(features).to_dict()
            except ValueError as e:
                raise DataError(_one_line(e)) from None
    if isinstance(features, Mapping):
        out = {str(m): str(s) for m, s in features.items()}
    else:
        out = {str(s).partition("@")[0]: str(s) for s in features}
    if not out:
        raise DataError("no features named; pass e.g. {'visual': 'visual', 'audio': 'logmel'}")
    return out


@dataclass
class VideoFeatures:
    """One video's (or one person's) features, aligned: every array has one row per frame.

    * ``x[m]`` ``(n_frames, dim)`` and ``mask[m]`` ``(n_frames,)`` bool per modality; a row is
      False where the modality has no evidence (no face, no audio stream, padding); its values
      are then zeros.
    * ``timestamps`` ``(n_frames,)`` seconds of each row (the video's frame times), or None
      when the cache has no probe entry for it (features ingested from elsewhere).
    * ``labels`` ``(n_frames, 2)`` float32 valence/arousal (-5 = unlabelled) and
      ``label_mask`` when labels were given, else None.
    * ``fingerprints[m]`` = ``"stage@fingerprint"``: exactly which cached features these are.
    """

    video: str
    person: Person
    x: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    timestamps: np.ndarray | None
    fingerprints: dict[str, str]
    labels: np.ndarray | None = None
    label_mask: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        """Rows of every array (the reference modality's row count)."""
        return int(next(iter(self.mask.values())).shape[0]) if self.mask else 0

    def present(self) -> dict[str, np.ndarray]:
        """Which modalities have evidence at each frame (``mask`` per modality, as a copy)."""
        return {m: v.copy() for m, v in self.mask.items()}


class FeatureStore:
    """Read-only access to a cache's features by video (and person).

    ``config``: None (every stage's defaults), a pipeline config file, a preset name or a
    ``{"stages": {...}}`` mapping: a stage name then means its fingerprint under that config.
    The store holds an SQLite connection: open one per process (the datasets below do this
    for you in each DataLoader worker).
    """

    def __init__(self, cache: str | Path, config: Any = None) -> None:
        try:
            self.source = CacheSource(cache, _load_config(config), exact=True)
        except (FileNotFoundError, ValueError) as e:
            raise DataError(_one_line(e)) from None
        self.root = Path(self.source.root)
        self.config = config

    def close(self) -> None:
        """Close the index connection."""
        self.source.cache.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def videos(self) -> list[str]:
        """Every cached video key."""
        return [k for k, _ in self.source.videos()]

    def resolve(self, features: Features, videos: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
        """``modality -> (stage, fingerprint)``: the one fingerprint of each feature that covers
        every video of ``videos`` (default: all). Resolve once, read many times."""
        vids = list(videos) if videos is not None else self.videos()
        keys = [self.key(v) for v in vids]
        out: dict[str, tuple[str, str]] = {}
        for m, spec in parse_features(features).items():
            ref = FeatureSet.parse({m: spec}).refs[m]
            try:
                out[m] = (ref.stage, self.source.resolve(ref, keys))
            except (FeatureError, KeyError, ValueError) as e:
                raise DataError(f"feature {m}={spec}: {_one_line(e)}") from None
        return out

    def key(self, video: str) -> str:
        """The cached key of ``video`` (a key, a content id or a unique id prefix)."""
        known = dict(self.source.videos())
        if video in known:
            return video
        try:
            cid = self.source.cache.resolve_video(video)
        except KeyError as e:
            raise DataError(_one_line(e)) from None
        keys = [k for k, c in self.source.videos() if c == cid]
        return keys[0] if keys else video

    def read(self, video: str, features: Features, *, person: Person = None,
             labels: LabelTrack | np.ndarray | None = None, tolerance: int = DEFAULT_TOLERANCE,
             resolved: Mapping[str, tuple[str, str]] | None = None) -> VideoFeatures:
        """Aligned arrays of several features of one video, in one call.

        ``person``: ``"left"``/``"right"`` (the two people of an Aff-Wild2 two-person video) or
        a face track id; person-aware stages (faces, visual) then give that person's rows and
        the others (audio, text) are shared. None: the main face. ``labels``: a
        :class:`LabelTrack` or an ``(n, 2)`` array, fitted to the frame count (padded with -5 /
        truncated within ``tolerance`` frames, else an error). ``resolved``: the result of
        :meth:`resolve`, to skip resolving per call."""
        key = self.key(video)
        fingerprints = dict(resolved) if resolved is not None else self.resolve(features, [key])
        arrays = {}
        for m, (stage, fp) in fingerprints.items():
            try:
                arrays[m] = self.source.load(stage, fp, key, person=person)
            except (FeatureError, KeyError, ValueError) as e:
                raise DataError(f"{key}: {m}={stage}@{fp[:12]}: {_one_line(e)}") from None
        dims = {m: self._dim(*fingerprints[m]) for m, a in arrays.items() if not (a.data.ndim == 2 and a.data.shape[1])}
        return assemble(key, person, fingerprints, arrays, labels, tolerance, dims)

    def _dim(self, stage: str, fp: str) -> int:
        """The feature width of a fingerprint, from its first entry with rows. Why: a video
        without that stream (no audio) stores no rows, and its zeros must have the width the
        other videos' rows have, or arrays of two videos do not stack."""
        if not hasattr(self, "_dims"):
            self._dims: dict[str, int] = {}
        if fp not in self._dims:
            self._dims[fp] = 0
            for e in self.source.cache.list(stage=stage):
                if e.fingerprint == fp and e.n_rows:
                    row = self.source.cache.read(stage, e.content_id, fingerprint=fp).read_rows(0, 1)
                    if np.ndim(row) == 2 and np.shape(row)[1]:
                        self._dims[fp] = int(np.shape(row)[1])
                        break
        return self._dims[fp]


def assemble(key: str, person: Person, fingerprints: Mapping[str, tuple[str, str]], arrays: Mapping[str, Any],
             labels: LabelTrack | np.ndarray | None, tolerance: int,
             dims: Mapping[str, int] | None = None) -> VideoFeatures:
    """Fit every modality to the reference's rows (the trainer's rule: padding rows are masked);
    ``dims`` gives the width of modalities stored without rows."""
    ref = next(iter(fingerprints))
    n = int(arrays[ref].data.shape[0]) if arrays[ref].data.ndim else 0
    x, mask = {}, {}
    for m, a in arrays.items():
        dim = int(a.data.shape[1]) if a.data.ndim == 2 and a.data.shape[1] else int((dims or {}).get(m, 0))
        dt = a.data.dtype if a.data.dtype.kind == "f" else np.dtype(np.float32)
        x[m], mask[m] = fit_rows(a, n, dim, dt)
    ts = arrays[ref].timestamps
    ts = np.asarray(ts, np.float64)[:n] if ts is not None and len(ts) >= n else None
    y = ym = None
    if labels is not None:
        track = labels if isinstance(labels, LabelTrack) else LabelTrack(key, key, np.asarray(labels, np.float32))
        try:
            y = track.aligned(n, tolerance)
        except LabelError as e:
            raise DataError(_one_line(e)) from None
        y[~np.all(np.isfinite(y), axis=1)] = UNLABELLED
        ym = np.all(y != UNLABELLED, axis=1)
    return VideoFeatures(key, person, x, mask, ts, {m: f"{s}@{f}" for m, (s, f) in fingerprints.items()}, y, ym)


def _load_config(config: Any) -> Any:
    """A config file or preset name as a PipelineConfig (validated); other forms unchanged."""
    if isinstance(config, (str, os.PathLike)):
        from avpipe.pipeline.config import PipelineConfig

        pcfg = PipelineConfig.load(config)
        pcfg.validate()
        return pcfg
    return config


# ----------------------------------------------------------------------------- labelled tracks
@dataclass
class LabelledTrack:
    """One labelled person-track: label name, cached video key, split, person and labels."""

    name: str
    video: str
    split: str | None
    person: Person
    labels: LabelTrack = field(repr=False)


def labelled_tracks(store: FeatureStore, labels: str | Path, *, split: str | Sequence[str] | None = None,
                    split_file: str | Path | None = None, val_fraction: float = 0.15, seed: int = 0,
                    clip_labels: bool = False) -> list[LabelledTrack]:
    """Label tracks matched to cached videos, with the trainer's split rules.

    ``labels``: an Aff-Wild2 folder or a CSV (docs/affwild2.md). Splits come from
    ``split_file`` (lines ``name,split``), else the label folders, else a hash of the video
    stem with ``val_fraction`` and ``seed`` (both people of a video share a split). ``split``
    keeps only those splits (``"train"``, ``"val"``, ``"test"``). A label named ``X_left`` binds
    person ``left`` of video ``X``. Tracks without a cached video are left out."""
    from avpipe.fusion.labels import assign_splits, load_labels, match_videos

    try:
        tracks = assign_splits(load_labels(labels, clip_labels), split_file, val_fraction, seed)
        keymap = match_videos(tracks, store.videos())
    except (LabelError, OSError) as e:
        raise DataError(_one_line(e)) from None
    wanted = {split} if isinstance(split, str) else set(split) if split is not None else None
    out = []
    for t in tracks:
        if t.name not in keymap or (wanted is not None and t.split not in wanted):
            continue
        ref = TrackRef(t.name, keymap[t.name], t)
        out.append(LabelledTrack(t.name, ref.video, t.split, ref.person, t))
    return out


def _renamed_keyword(value: Any, old_value: Any, name: str, old_name: str, func: str) -> Any:
    """``value``, or ``old_value`` given under a keyword's old name (with a DeprecationWarning):
    code written against an earlier release keeps working for a while, and says what to change."""
    if old_value is None:
        if value is None:
            raise TypeError(f"{func}() missing required argument: {name!r}")
        return value
    if value is not None:
        raise TypeError(f"{func}() got both {name!r} and its old name {old_name!r}; pass {name!r} only")
    warnings.warn(f"{func}({old_name}=...) is deprecated; pass {name}=... (same value)", DeprecationWarning,
                  stacklevel=3)
    return old_value


def _refs(tracks: Sequence[LabelledTrack]) -> list[TrackRef]:
    return [TrackRef(t.name, t.video, t.labels, person=t.person) for t in tracks]


def load_windows(source: FeatureSource, fingerprints: Mapping[str, tuple[str, str]] | None = None,
                 tracks: Sequence[TrackRef] | None = None, *,
                 device: str | torch.device = "cpu", dtype: str = "auto", tolerance: int = DEFAULT_TOLERANCE,
                 budget_bytes: int | None = None, force_chunked: bool = False,
                 fps: Mapping[str, tuple[str, str]] | None = None) -> Any:
    """The trainer's loader: every track of a split read once into contiguous tensors.

    ``fingerprints``: modality -> (stage, fingerprint), as :meth:`FeatureStore.resolve` returns.
    Returns a provider holding the whole split in one bank when it fits ``budget_bytes``
    (default: half the device's free memory), else groups of whole videos loaded in turn; the
    trainer (``avpipe train``) and :class:`InMemoryWindowDataset` both load through here.
    ``fps=`` is the deprecated spelling of ``fingerprints=`` (it read as frames per second)."""
    fingerprints = _renamed_keyword(fingerprints, fps, "fingerprints", "fps", "load_windows")
    if tracks is None:
        raise TypeError("load_windows() missing required argument: 'tracks'")
    return make_provider(source, fingerprints, tracks, device=device, dtype=dtype, tolerance=tolerance,
                         budget_bytes=budget_bytes, force_chunked=force_chunked)


# ----------------------------------------------------------------------------- datasets
class _WindowIndex:
    """Windows of a set of tracks: (track, start, length) with the trainer's placement."""

    def __init__(self, lengths: Sequence[int], label_valid: Sequence[np.ndarray | None], window: int,
                 hop: int, require_labels: bool) -> None:
        v, s, n = window_starts(np.asarray(lengths, np.int64), window, hop)
        if require_labels and len(v):
            keep = np.zeros(len(v), bool)
            for i, (vi, si, ni) in enumerate(zip(v, s, n)):
                lv = label_valid[vi]
                keep[i] = lv is not None and bool(lv[si:si + ni].any())
            v, s, n = v[keep], s[keep], n[keep]
        self.track, self.start, self.length = v, s, n

    def __len__(self) -> int:
        return int(len(self.track))


def _check_window(window: int, hop: int, clip_len: int) -> None:
    if window < 1 or hop < 1 or clip_len < 1:
        raise DataError(f"window ({window}), hop ({hop}) and clip_len ({clip_len}) must be >= 1")
    if window % clip_len:
        raise DataError(f"window {window} is not a multiple of clip_len {clip_len}")


def _item(x: Mapping[str, torch.Tensor], m: Mapping[str, torch.Tensor], y: torch.Tensor, ym: torch.Tensor,
          track: int, start: int, length: int, clip_len: int) -> dict[str, Any]:
    if clip_len > 1:
        xs, ms = pool_clips({k: v.unsqueeze(0) for k, v in x.items()},
                            {k: v.unsqueeze(0) for k, v in m.items()}, clip_len)
        x, m = {k: v[0] for k, v in xs.items()}, {k: v[0] for k, v in ms.items()}
    return {"x": dict(x), "mask": dict(m), "y": y, "y_mask": ym, "track": track, "start": start,
            "length": length}


def _split_tracks(store: FeatureStore, labels: str | Path | Sequence[LabelledTrack], features: Features, *,
                  split: str | Sequence[str] | None, split_file: str | Path | None, val_fraction: float,
                  seed: int) -> tuple[list[LabelledTrack], dict[str, tuple[str, str]]]:
    """The labelled tracks of ``split`` (or the tracks given) and the exact fingerprints of
    ``features`` over their videos: what both window datasets are built from."""
    tracks = (list(labels) if not isinstance(labels, (str, Path)) else
              labelled_tracks(store, labels, split=split, split_file=split_file, val_fraction=val_fraction,
                              seed=seed))
    if not tracks:
        raise DataError(f"no labelled track of split {split!r} matches a video in {store.root}")
    return tracks, store.resolve(features, sorted({t.video for t in tracks}))


class WindowDataset(torch.utils.data.Dataset):
    """Labelled windows read lazily from the cache: a ``torch.utils.data.Dataset``.

    Item ``i`` is a dict of tensors: ``x[m]`` ``(T, dim)`` float32 and ``mask[m]`` ``(T,)``
    bool per modality, ``y`` ``(window, 2)`` valence/arousal, ``y_mask`` ``(window,)`` (labelled
    and inside the video), and ``track`` / ``start`` / ``length`` (which track's frames
    ``start:start+length`` the window holds; the rest is padding). ``T`` is ``window``, or
    ``window / clip_len`` clip tokens when ``clip_len > 1`` (a token is the mean of its clip's
    valid frames, valid when any frame is; labels stay per frame). Windows are the trainer's:
    every ``hop`` frames, the last aligned to the video's end; windows without a labelled
    frame are dropped unless ``require_labels=False``.

    ``stats``: ``{modality: (mean, std)}`` to normalise valid rows (padding and masked rows stay
    0); :meth:`compute_stats` computes them on a training split.

    Works with a multi-worker DataLoader: the cache index is opened lazily in each worker
    process (nothing open is inherited across ``fork``, nothing open is pickled for ``spawn``),
    and an item reads only its window's frames from the HDF5 shards (a person's frames of the
    person's track), so memory stays one batch whatever the split's size.
    """

    def __init__(self, cache: str | Path, labels: str | Path | Sequence[LabelledTrack], features: Features, *,
                 split: str | Sequence[str] | None = "train", window: int = 300, hop: int = 200,
                 clip_len: int = 1, config: Any = None, split_file: str | Path | None = None,
                 val_fraction: float = 0.15, seed: int = 0, tolerance: int = DEFAULT_TOLERANCE,
                 require_labels: bool = True,
                 stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        _check_window(window, hop, clip_len)
        self.cache, self.config = Path(cache), config
        self.window, self.hop, self.clip_len, self.tolerance = int(window), int(hop), int(clip_len), int(tolerance)
        with FeatureStore(cache, config) as store:
            self.tracks, self.fingerprints = _split_tracks(store, labels, features, split=split,
                                                           split_file=split_file, val_fraction=val_fraction,
                                                           seed=seed)
            ref = next(iter(self.fingerprints.values()))
            refs = _refs(self.tracks)
            try:
                lengths = [track_rows(store.source, ref, r) for r in refs]
                # each modality's dim as the trainer's bank finds it: the first video with rows
                videos = list(dict.fromkeys(t.video for t in self.tracks))
                self.dims = {m: modality_info(store.source, fp, videos, None, "auto")[0]
                             for m, fp in self.fingerprints.items()}
            except (FeatureError, KeyError) as e:
                raise DataError(_one_line(e)) from None
        self.lengths = lengths
        self.labels = [t.labels.aligned(n, tolerance) if n else np.zeros((0, 2), np.float32)
                       for t, n in zip(self.tracks, lengths)]
        for y in self.labels:
            y[~np.all(np.isfinite(y), axis=1)] = UNLABELLED
        self.windows = _WindowIndex(lengths, [np.all(y != UNLABELLED, axis=1) for y in self.labels],
                                    self.window, self.hop, require_labels)
        self.stats = {m: (np.asarray(a, np.float32), np.asarray(b, np.float32)) for m, (a, b) in (stats or {}).items()}
        self._store: FeatureStore | None = None
        self._pid: int | None = None
        self._entries: dict[tuple[str, int], Any] = {}

    # -- per-process state: never inherited across fork, never pickled to spawned workers ---
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_store"], d["_pid"], d["_entries"] = None, None, {}
        return d

    def _open(self) -> FeatureStore:
        if self._store is None or self._pid != os.getpid():
            self._store = FeatureStore(self.cache, self.config)  # a forked parent's handle is never reused
            self._pid = os.getpid()
            self._entries = {}
        return self._store

    def __len__(self) -> int:
        return len(self.windows)

    def track(self, i: int) -> VideoFeatures:
        """All frames of track ``i`` (``self.tracks[i]``), aligned, with its labels."""
        t = self.tracks[i]
        return self._open().read(t.video, {}, person=t.person, labels=self.labels[i], tolerance=self.tolerance,
                                 resolved=self.fingerprints)

    def _rows(self, m: str, ti: int, s: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``s:s+n`` of modality ``m`` of track ``ti`` (fewer where the entry is shorter),
        read from the shard without reading the rest."""
        from avpipe.fusion.persons import PersonTrackError, person_row

        store = self._open()
        t = self.tracks[ti]
        stage, fp = self.fingerprints[m]
        e = self._entries.get((m, ti))
        if e is None:
            try:
                e = store.source.cache.read(stage, t.video, fingerprint=fp)
            except KeyError as ex:
                raise DataError(f"{t.video}: {m}={stage}@{fp[:12]}: {_one_line(ex)}") from None
            self._entries[(m, ti)] = e
        if not e.present:
            return np.zeros((0, 0), np.float32), np.zeros(0, bool)
        r = None
        if t.person is not None:
            try:
                r = person_row(e.attrs, e.extra, t.person, stage=stage, video=t.video,
                               provenance=getattr(e, "provenance", None))
            except PersonTrackError as ex:
                raise DataError(f"label {t.name!r}: {_one_line(ex)}") from None
        if r is None:
            d, mk = e.read_rows(s, s + n), e.mask[s:s + n]
        else:
            d = e.extra_rows(TRACK_DATA, s, s + n, (r,))
            mk = e.extra_rows(TRACK_MASK, s, s + n, (r,)).astype(bool)
        d = np.asarray(d)
        return (d.reshape(len(d), -1) if d.ndim != 2 else d), np.asarray(mk, bool)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not 0 <= idx < len(self):
            raise IndexError(f"window {idx} out of range ({len(self)} windows)")
        ti, s, n = int(self.windows.track[idx]), int(self.windows.start[idx]), int(self.windows.length[idx])
        T = self.window
        x, m = {}, {}
        for k in self.fingerprints:
            d, mk_rows = self._rows(k, ti, s, n)
            k_n = min(len(d), len(mk_rows))
            a = np.zeros((T, self.dims[k]), np.float32)
            mk = np.zeros(T, bool)
            if k_n and d.shape[1] == self.dims[k]:
                a[:k_n], mk[:k_n] = d[:k_n], mk_rows[:k_n]
            if k in self.stats:
                mu, sd = self.stats[k]
                a = (a - mu) / sd * mk[:, None]
            x[k], m[k] = torch.from_numpy(a.astype(np.float32, copy=False)), torch.from_numpy(mk)
        y = np.full((T, 2), UNLABELLED, np.float32)
        y[:n] = self.labels[ti][s:s + n]
        ym = np.zeros(T, bool)
        ym[:n] = np.all(y[:n] != UNLABELLED, axis=1)
        return _item(x, m, torch.from_numpy(y), torch.from_numpy(ym), ti, s, n, self.clip_len)

    def compute_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-modality mean/std over the valid rows of every track (float64 sums), for the
        ``stats=`` of this and the validation dataset. Compute it on the training split only."""
        s1: dict[str, np.ndarray] = {}
        s2: dict[str, np.ndarray] = {}
        cnt: dict[str, int] = {}
        for i in range(len(self.tracks)):
            v = self.track(i)
            for k, a in v.x.items():
                r = a[v.mask[k]].astype(np.float64)
                s1[k] = s1.get(k, 0) + r.sum(0)
                s2[k] = s2.get(k, 0) + np.square(r).sum(0)
                cnt[k] = cnt.get(k, 0) + len(r)
        out = {}
        for k in s1:
            c = max(cnt[k], 1)
            mu = s1[k] / c
            sd = np.sqrt(np.maximum(s2[k] / c - mu * mu, 0)).clip(1e-6)
            out[k] = (mu.astype(np.float32), sd.astype(np.float32))
        return out


class InMemoryWindowDataset(torch.utils.data.Dataset):
    """The same windows and items as :class:`WindowDataset`, from the trainer's in-memory bank.

    Every track is read once, up front, into one contiguous tensor per modality (the loader
    ``avpipe train`` uses, :func:`load_windows`), and normalised with ``stats`` or the split's
    own statistics (``stats="self"``); an item is then a slice, no I/O. Fastest when the split
    fits in memory; use it with ``num_workers=0`` (the bank is already in this process)."""

    def __init__(self, cache: str | Path, labels: str | Path | Sequence[LabelledTrack], features: Features, *,
                 split: str | Sequence[str] | None = "train", window: int = 300, hop: int = 200,
                 clip_len: int = 1, config: Any = None, split_file: str | Path | None = None,
                 val_fraction: float = 0.15, seed: int = 0, tolerance: int = DEFAULT_TOLERANCE,
                 require_labels: bool = True,
                 stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | str | None = None,
                 dtype: str = "float32") -> None:
        from avpipe.fusion.data import Stats, compute_stats, load_bank

        _check_window(window, hop, clip_len)
        self.window, self.hop, self.clip_len = int(window), int(hop), int(clip_len)
        with FeatureStore(cache, config) as store:
            self.tracks, self.fingerprints = _split_tracks(store, labels, features, split=split,
                                                           split_file=split_file, val_fraction=val_fraction,
                                                           seed=seed)
            try:
                self.bank = load_bank(store.source, self.fingerprints, _refs(self.tracks), dtype=dtype,
                                      tolerance=tolerance)
            except (FeatureError, LabelError) as e:
                raise DataError(_one_line(e)) from None
        if stats == "self":
            self.stats = _stats_pairs(compute_stats([self.bank]))
        elif isinstance(stats, str):
            raise DataError(f"stats must be a mapping, 'self' or None, not {stats!r}")
        else:
            self.stats = {m: (np.asarray(a, np.float32), np.asarray(b, np.float32)) for m, (a, b) in (stats or {}).items()}
        if self.stats:
            self.bank.set_stats(Stats({m: a for m, (a, _) in self.stats.items()},
                                      {m: b for m, (_, b) in self.stats.items()}))
        off = self.bank.offsets.numpy()
        self.lengths = np.diff(off).tolist()
        yv = self.bank.y_valid.numpy()
        self.windows = _WindowIndex(self.lengths, [yv[off[i]:off[i + 1]] for i in range(len(self.tracks))],
                                    self.window, self.hop, require_labels)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not 0 <= idx < len(self):
            raise IndexError(f"window {idx} out of range ({len(self)} windows)")
        ti, s, n = int(self.windows.track[idx]), int(self.windows.start[idx]), int(self.windows.length[idx])
        g0 = int(self.bank.offsets[ti]) + s
        T = self.window
        # a window is a contiguous slice of the bank: one converting copy per array, no gather
        x = {k: _padded(t[g0:g0 + n], T, torch.float32) for k, t in self.bank.x.items()}
        m = {k: _padded(t[g0:g0 + n], T) for k, t in self.bank.valid.items()}
        y = _padded(self.bank.y[g0:g0 + n], T, fill=UNLABELLED)
        return _item(x, m, y, _padded(self.bank.y_valid[g0:g0 + n], T), ti, s, n, self.clip_len)


def _padded(t: torch.Tensor, T: int, dtype: torch.dtype | None = None, fill: float = 0) -> torch.Tensor:
    """``t`` (n, ...) copied into a new (T, ...) tensor padded with ``fill`` (zeros / False).

    Built in NumPy on a CPU bank: for a small tensor, torch's CPU ops (fill, a float16 copy) go
    through the intra-op thread pool, which on a busy machine costs far more than the work."""
    if t.device.type != "cpu":
        out = torch.full((T, *t.shape[1:]), fill, dtype=dtype or t.dtype, device=t.device)
        out[:t.shape[0]] = t
        return out
    a = t.numpy()
    dt = torch.empty(0, dtype=dtype).numpy().dtype if dtype is not None else a.dtype
    out = np.full((T, *a.shape[1:]), fill, dtype=dt)
    out[:a.shape[0]] = a
    return torch.from_numpy(out)


def _stats_pairs(stats: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {m: (stats.mean[m], stats.std[m]) for m in stats.mean}
