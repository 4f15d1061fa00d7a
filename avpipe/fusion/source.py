"""Where the trainer's features come from: a feature set and a small source protocol.

* :class:`FeatureSet` maps modalities to cached stages (``visual=visual,audio=logmel@3fa2…``): a
  stage name means "the fingerprint of that stage that covers the labelled videos" and is resolved
  once per run (:meth:`FeatureSource.resolve`); ``stage@fingerprint`` pins one. The resolved
  fingerprints are recorded in the run config so that a run names exactly what it trained on.
  Picking a source: ``visual=visual@<fp>`` selects, e.g., the visual entries computed on the
  organisers' crops (``avpipe ingest-crops`` prints that fingerprint) rather than on MTCNN's.
* Per person: ``load(..., person="left")`` returns that person's rows of a stage with a ``sides``
  attr (see :mod:`avpipe.fusion.persons`); stages without one are shared by both people.
* :class:`FeatureSource` is the only surface the data path needs. :class:`CacheSource` implements it
  on the pipeline's read API (``avpipe.pipeline.store.Cache``) — fusion never opens shards itself;
  :class:`MemorySource` serves tests and in-process use.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from avpipe.pipeline.person_tracks import TRACKS_ATTR, is_person_aware


# Default feature set: modality -> stage (docs/stages.md#stage-graph).
DEFAULT_STAGES = {"visual": "visual", "audio": "logmel", "text": "text"}


class FeatureError(LookupError):
    """A feature the run needs is not in the cache (with what to run to get it)."""


@dataclass(frozen=True)
class StageRef:
    """One modality's source: a stage name, optionally pinned to a fingerprint (prefix ok)."""

    stage: str
    fingerprint: str | None = None

    def __str__(self) -> str:
        return f"{self.stage}@{self.fingerprint}" if self.fingerprint else self.stage

    @classmethod
    def parse(cls, s: str) -> "StageRef":
        stage, _, fp = s.strip().partition("@")
        if not stage:
            raise ValueError(f"empty stage in feature spec {s!r}")
        return cls(stage, fp or None)


@dataclass
class FeatureSet:
    """modality -> :class:`StageRef`."""

    refs: dict[str, StageRef]

    @classmethod
    def parse(cls, spec: str | Mapping[str, str] | None, modalities: Iterable[str] = ()) -> "FeatureSet":
        """``"visual=visual,audio=logmel@ab12"`` or a mapping; modalities not given default to
        :data:`DEFAULT_STAGES` (visual→visual, audio→logmel, text→text)."""
        refs: dict[str, StageRef] = {}
        if isinstance(spec, str):
            for part in filter(None, (p.strip() for p in spec.split(","))):
                mod, eq, ref = part.partition("=")
                if not eq:
                    raise ValueError(f"feature spec {part!r}: expected modality=stage[@fingerprint]")
                refs[mod.strip()] = StageRef.parse(ref)
        elif spec:
            refs = {m: StageRef.parse(str(r)) for m, r in spec.items()}
        for m in modalities:
            if m not in refs and m in DEFAULT_STAGES:
                refs[m] = StageRef(DEFAULT_STAGES[m])
        return cls(refs)

    def to_dict(self) -> dict[str, str]:
        return {m: str(r) for m, r in self.refs.items()}

    def stages(self) -> dict[str, str]:
        return {m: r.stage for m, r in self.refs.items()}

    def subset(self, modalities: Iterable[str]) -> "FeatureSet":
        return FeatureSet({m: self.refs[m] for m in modalities if m in self.refs})


@dataclass
class FeatureArrays:
    """One modality of one video: ``data`` (n, d), ``mask`` (n,) bool, optional timestamps."""

    data: np.ndarray
    mask: np.ndarray
    timestamps: np.ndarray | None = None
    present: bool = True
    # per-person rows ("left"/"right") of a person-aware stage (avpipe.fusion.persons); None: shared
    persons: dict[str, "FeatureArrays"] | None = None


class FeatureSource(Protocol):
    def videos(self) -> list[tuple[str, str]]:
        """(key, content id) of every video the source knows."""

    def resolve(self, ref: StageRef, videos: list[str]) -> str:
        """The one fingerprint of ``ref`` to use for ``videos`` (keys); FeatureError if none."""

    def load(self, stage: str, fingerprint: str, video: str, person: str | None = None) -> FeatureArrays:
        """One video's rows (``person``: that person's track, see avpipe.fusion.persons);
        FeatureError if that entry or person track is missing."""

    def has(self, stage: str, fingerprint: str, video: str) -> bool:
        """Whether the entry exists (cheap)."""


def _missing_msg(stage: str, n: int, examples: list[str]) -> str:
    return (f"{n} video(s) have no complete {stage!r} entry in the cache (e.g. {examples[:3]}); "
            f"run: avpipe extract --stages {stage} --videos DIR --cache CACHE")


class MemorySource:
    """In-memory source: ``arrays[(stage, key)] = FeatureArrays``; one fingerprint per stage."""

    def __init__(self, arrays: Mapping[tuple[str, str], FeatureArrays],
                 fingerprints: Mapping[str, str] | None = None) -> None:
        self.arrays = dict(arrays)
        self.fingerprints = dict(fingerprints or {})

    def videos(self) -> list[tuple[str, str]]:
        keys = sorted({k for _, k in self.arrays})
        return [(k, k) for k in keys]

    def _fp(self, stage: str) -> str:
        return self.fingerprints.get(stage, f"mem-{stage}")

    def resolve(self, ref: StageRef, videos: list[str]) -> str:
        missing = [v for v in videos if (ref.stage, v) not in self.arrays]
        if missing:
            raise FeatureError(_missing_msg(ref.stage, len(missing), missing))
        fp = self._fp(ref.stage)
        if ref.fingerprint and not fp.startswith(ref.fingerprint):
            raise FeatureError(f"stage {ref.stage!r}: no fingerprint {ref.fingerprint!r} (have {fp})")
        return fp

    def has(self, stage: str, fingerprint: str, video: str) -> bool:
        return (stage, video) in self.arrays

    def load(self, stage: str, fingerprint: str, video: str, person: str | None = None) -> FeatureArrays:
        try:
            a = self.arrays[(stage, video)]
        except KeyError:
            raise FeatureError(_missing_msg(stage, 1, [video])) from None
        if person is None or a.persons is None:
            return a
        if person not in a.persons:
            from avpipe.fusion.persons import PersonTrackError

            raise PersonTrackError(f"video {video!r}: stage {stage!r} has no {person} person track")
        return a.persons[person]


class CacheSource:
    """:class:`FeatureSource` over the pipeline's cache index (``avpipe.pipeline.store.Cache``).

    Resolution of a stage name is exact, never "the newest": the fingerprint of the stage's
    config (``config``: a pipeline config, default every stage's defaults, see
    :meth:`Cache.resolve`); if the cache has no entries of that config, the one fingerprint of the
    stage that covers every requested video (e.g. precomputed features); if several could be
    meant, an error listing them with their configs (pin one: ``stage@fingerprint``). Every video
    must be covered by that one fingerprint: mixing fingerprints inside one training set would mix
    feature definitions silently. Reads then pin the resolved fingerprint.
    """

    def __init__(self, root: str | Path, config: Any = None, *, exact: bool = False) -> None:
        from avpipe.pipeline.store import Cache

        # exact: a stage name never means another config of a stage avpipe computes; only features
        # ingested without a config (version "precomputed") stand in for the config (avpipe.data)
        self.exact = exact
        self.root = Path(root)
        self.cache = Cache(self.root)
        self.config = config
        self._videos: list[tuple[str, str]] | None = None
        self._cid: dict[str, str] = {}
        self._rows: dict[tuple[str, str], dict[str, int | None]] = {}

    def videos(self) -> list[tuple[str, str]]:
        if self._videos is None:
            self._videos = [(str(k), str(c)) for k, c in self.cache.videos()]
            self._cid = dict(self._videos)
        return list(self._videos)

    def content_id(self, video: str) -> str:
        self.videos()
        if video in self._cid:
            return self._cid[video]
        return str(self.cache.resolve_video(video))

    def _entries(self, stage: str) -> dict[str, dict[str, Any]]:
        """fingerprint -> {content ids, created}."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.cache.list(stage=stage):
            d = out.setdefault(str(e.fingerprint), {"cids": set(), "created": 0.0})
            d["cids"].add(str(e.content_id))
            d["created"] = max(d["created"], float(getattr(e, "created", 0) or 0))
        return out

    def resolve(self, ref: StageRef, videos: list[str]) -> str:
        from avpipe.pipeline.types import AmbiguousRead, NotCached

        cids = {self.content_id(v): v for v in videos}
        entries = self._entries(ref.stage)
        if ref.fingerprint:
            entries = {f: d for f, d in entries.items() if f.startswith(ref.fingerprint)}
            if not entries:
                raise FeatureError(f"stage {ref.stage!r} has no completed entries with fingerprint "
                                   f"{ref.fingerprint!r} in {self.root}")
            if len(entries) > 1:
                raise FeatureError(f"fingerprint prefix {ref.fingerprint!r} is ambiguous: {sorted(entries)}")
            best = next(iter(entries))
        else:
            if not entries:
                raise FeatureError(_missing_msg(ref.stage, len(videos), videos))
            try:
                best = self.cache.resolve(ref.stage, self.config)
            except AmbiguousRead as e:
                raise FeatureError(str(e)) from e
            except (NotCached, ValueError):
                best = ""
            if best not in entries:  # no entries of that config: only an unambiguous other one will do
                full = [f for f, d in entries.items() if set(cids) <= d["cids"]]
                if self.exact:
                    versions = {r.fingerprint: str(r.version) for r in self.cache.fingerprints(ref.stage)}
                    full = [f for f in full if versions.get(f) == "precomputed"]
                if len(full) != 1:
                    raise FeatureError(self._choose_msg(ref.stage, sorted(full or entries)))
                best = full[0]
        missing = [cids[c] for c in cids if c not in entries[best]["cids"]]
        if missing:
            raise FeatureError(_missing_msg(ref.stage, len(missing), missing)
                               + f" (fingerprint {best[:12]})")
        return best

    def _choose_msg(self, stage: str, candidates: list[str]) -> str:
        rows = {f.fingerprint: f for f in self.cache.fingerprints(stage)}
        listed = "; ".join(f"{stage}@{f[:16]} config={rows[f].config if f in rows else '?'}" for f in candidates)
        return (f"stage {stage!r}: the cache has no entries of its default config and "
                f"{len(candidates)} other fingerprint(s) could be meant: {listed}. Pin one with "
                f"--features MODALITY={stage}@FINGERPRINT (in Python: '{stage}@FINGERPRINT'; a stage name never "
                f"means 'the newest')")

    def n_rows(self, stage: str, fingerprint: str, video: str) -> int | None:
        """Row count from the index (EntryInfo.n_rows) without opening the shard."""
        key = (stage, fingerprint)
        if key not in self._rows:
            self._rows[key] = {str(e.content_id): getattr(e, "n_rows", None)
                               for e in self.cache.list(stage=stage) if str(e.fingerprint) == fingerprint}
        return self._rows[key].get(self.content_id(video))

    def has(self, stage: str, fingerprint: str, video: str) -> bool:
        try:
            self.cache.read(stage, video, fingerprint=fingerprint)
            return True
        except Exception:
            return False

    def load(self, stage: str, fingerprint: str, video: str, person: str | None = None) -> FeatureArrays:
        try:
            e = self.cache.read(stage, video, fingerprint=fingerprint)
        except Exception as ex:  # the store's own not-found error, whatever its class
            raise FeatureError(f"{_missing_msg(stage, 1, [video])} ({ex})") from ex
        from avpipe.fusion.feature_checks import read_checked

        widths = self.__dict__.setdefault("_widths", {})
        data, mask = read_checked(e, stage, e.fingerprint, video, self.n_rows(stage, e.fingerprint, video), widths)
        if person is not None:
            from avpipe.fusion.persons import select_person

            data, mask = select_person(data, mask, e.attrs, e.extra, person, stage=stage, video=video,
                                       provenance=getattr(e, "provenance", None))
        elif len((e.attrs or {}).get(TRACKS_ATTR) or []) >= 2 and is_person_aware(e.attrs):
            _warn_main_face_switches(data, mask, e, stage, video)
        if data.ndim == 1:
            data = data.reshape(-1, 1) if data.size else data.reshape(0, 0)
        return FeatureArrays(data=data, mask=mask,
                             timestamps=getattr(e, "timestamps", None), present=bool(e.present))



def _warn_main_face_switches(data: np.ndarray, mask: np.ndarray, e: Any, stage: str, video: str) -> None:
    """An unsided label on a video with two or more people: warn when its main face changes person."""
    import warnings

    from avpipe.fusion.persons import main_face_people, main_face_switch_message, person_changes

    try:
        changes = person_changes(main_face_people(data, mask, e.attrs, e.extra))
    except (KeyError, ValueError, IndexError):  # no stored tracks to compare with
        return
    if changes:
        warnings.warn(main_face_switch_message(video, stage, changes), stacklevel=3)
