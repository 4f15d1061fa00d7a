"""The cache store: where shards live, how a worker writes one, and the read API.

Layout under a cache root::

    <root>/index.sqlite                              the truth (see index.py)
    <root>/.lock                                     inter-process lock (see lock.py)
    <root>/shards/<stage>/<fingerprint[:16]>/<uuid>.h5   one shard per worker task

Paths inside the cache are built only from stage names (validated identifiers), fingerprints and
uuids — never from video names — so no key (``..``, absolute, non-ASCII) can escape the root.

Read API (used by the trainer and by stages through their inputs)::

    from avpipe.pipeline.store import Cache
    c = Cache(root)                                   # read-only: works on a read-only cache
    e = c.read("faces", "clips/a.mp4")                # faces with its default config
    e = c.read("logmel", "clips/a.mp4", config={"n_mels": 64})     # another config
    fp = c.resolve("visual", {"backbone": "dlib"})    # resolve once, then pin:
    e = c.read("visual", "clips/a.mp4", fingerprint=fp)            # (a unique prefix is enough)
    e.data, e.mask, e.attrs, e.timestamps

A stage name means the fingerprint of one config of that stage — its defaults, with the default
configs upstream, unless ``config=`` says otherwise — never "the newest entry of any config". If
that config has no entry for the video but other configs do, the read raises
:class:`~avpipe.pipeline.types.AmbiguousRead` listing them; with none at all,
:class:`~avpipe.pipeline.types.NotCached` (both are KeyErrors).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avpipe.pipeline.entry import ShardEntry
from avpipe.pipeline.index import FailureRecord, Index, ShardRecord
from avpipe.pipeline.types import PROBE, AmbiguousRead, NotCached, ShardMissing, StageResult

INDEX_NAME = "index.sqlite"
SHARDS_DIR = "shards"
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEX_RE = re.compile(r"^[0-9a-f]{6,64}$")

FailureInfo = FailureRecord  # public name of a failure row


def check_stage_name(name: str) -> str:
    """Stage names become folder names: only ``[a-z][a-z0-9_]*``."""
    if not _STAGE_NAME_RE.match(name):
        raise ValueError(f"invalid stage name {name!r}: use lowercase letters, digits and _")
    return name


def shard_dir(root: str | Path, stage: str, fingerprint: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{16,}", fingerprint):
        raise ValueError(f"invalid fingerprint {fingerprint!r}")
    return Path(root) / SHARDS_DIR / check_stage_name(stage) / fingerprint[:16]


def similar_keys(video: str, keys: Sequence[str]) -> list[str]:
    """Cached keys a user probably meant by ``video``: same file name, or same stem (``a`` or
    ``a.mp4`` for ``clips/a.mp4``). Why: keys are paths relative to ``--videos``, and a bare
    stem (as label files name videos) is the most common miss."""
    from pathlib import PurePosixPath

    want = PurePosixPath(video.replace("\\", "/"))
    by_name = [k for k in keys if PurePosixPath(k).name == want.name]
    return sorted(by_name or [k for k in keys if PurePosixPath(k).stem == want.stem])


def write_shard(root: str | Path, stage: str, fingerprint: str,
                results: Sequence[tuple[str, StageResult]],
                provenance: Mapping[str, Any]) -> ShardRecord | None:
    """Worker side: write ``results`` into a new shard (temp name, fsync, rename) and return
    what was written. Never touches the index — the driver commits the returned record."""
    from avpipe.pipeline.shard_writer import ShardWriter

    with ShardWriter(root, stage, fingerprint, provenance) as w:
        for cid, res in results:
            w.add(cid, res)
        return w.commit()


@dataclass(frozen=True)
class EntryInfo:
    stage: str
    fingerprint: str
    content_id: str
    keys: list[str]
    n_rows: int
    shard: str
    created: float


@dataclass(frozen=True)
class FingerprintInfo:
    fingerprint: str
    stage: str
    version: str
    config: dict[str, Any]
    weights_id: str | None
    upstream: dict[str, str]
    created: float
    n_entries: int
    n_failures: int


class Cache:
    """A cache root.

    ``Cache(root)`` opens an existing cache **read-only** (FileNotFoundError if there is none, so
    a typo does not silently read an empty cache): it never writes, so it works on a read-only
    mount. ``create=True`` makes one and opens it for writing (the caller holds the lock, as
    ``extract`` does); :meth:`lock` takes the lock and makes the index writable for a block.
    """

    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        ipath = self.root / INDEX_NAME
        if not create and not ipath.exists():
            raise FileNotFoundError(f"no avpipe cache at {self.root} (missing {INDEX_NAME}); "
                                    "run `avpipe extract` first or pass the right --cache")
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.index = Index(ipath, readonly=not create)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return not self.index.readonly

    @contextmanager
    def lock(self, purpose: str = "write", say: Any = None) -> Iterator["Cache"]:
        """Hold the cache lock and a writable index for the block (every change to a cache goes
        through here or through ``extract``'s lock). Raises CacheReadOnly on a read-only cache."""
        from avpipe.pipeline.lock import CacheLock

        with CacheLock(self.root, purpose=purpose, say=say):
            if not self.index.readonly:
                yield self
                return
            reader = self.index
            self.index = Index(reader.path)
            try:
                yield self
            finally:
                self.index.close()
                self.index = reader

    # -- paths ------------------------------------------------------------------------------
    def shard_path(self, relpath: str) -> Path:
        """Absolute path of a shard named by the index; refuses anything outside ``shards/``."""
        p = (self.root / relpath).resolve()
        if not p.is_relative_to((self.root / SHARDS_DIR).resolve()):
            raise ValueError(f"shard path {relpath!r} escapes the cache root")
        return p

    def _existing_shard(self, relpath: str, stage: str, video: str) -> Path:
        p = self.shard_path(relpath)
        if not p.is_file():
            raise ShardMissing(f"the {stage!r} shard of video {video!r} is missing from disk ({p}); "
                               "the cache was changed behind its back: run `avpipe cache verify` to "
                               "drop the lost entries, then `avpipe extract` recomputes them")
        return p

    # -- identity ---------------------------------------------------------------------------
    def resolve_video(self, key_or_id: str) -> str:
        """Content id of a video key (as discovered), a content id, or a unique id prefix."""
        cids = self.index.content_ids_for_key(key_or_id)
        if not cids:
            from avpipe.pipeline.discover import normalize_key

            cids = self.index.content_ids_for_key(normalize_key(key_or_id))
        if cids:
            return cids[0]  # the most recently seen bytes under that key
        if _HEX_RE.match(key_or_id):
            found = self.index.content_ids_with_prefix(key_or_id)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise NotCached(f"content id prefix {key_or_id!r} is ambiguous: {found[:5]}")
        known = [k for k, _ in self.index.videos()]
        near = similar_keys(key_or_id, known)
        if near:
            hint = f"; did you mean {' or '.join(map(repr, near[:5]))}? (a key is the path under --videos)"
        else:
            hint = f"; known keys include {known[:5]}" if known else "; the cache knows no videos yet"
        raise NotCached(f"unknown video {key_or_id!r} (neither a known key nor a content id){hint}")

    # -- fingerprints -----------------------------------------------------------------------
    def _resolve_fingerprint(self, token: str) -> str | None:
        if self.index.fingerprint_row(token) is not None:
            return token
        if _HEX_RE.match(token):
            found = self.index.fingerprints_with_prefix(token)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise NotCached(f"fingerprint prefix {token!r} is ambiguous: {[f[:16] for f in found]}")
        return None

    def resolve(self, stage: str, config: Any = None) -> str:
        """The fingerprint of ``stage`` under ``config``: None (the defaults), the stage's own
        options (``{"n_mels": 64}``) or a whole :class:`PipelineConfig` (upstream configs too).

        Resolve once per run and pass the result as ``read(..., fingerprint=)``: that is what a
        trainer records. NotCached / AmbiguousRead when the cache has no such fingerprint."""
        from avpipe.pipeline.resolve import resolve_fingerprint

        return resolve_fingerprint(self.index, stage, config)

    def resolve_all(self, stages: Sequence[str], config: Any = None) -> dict[str, str]:
        """:meth:`resolve` for several stages under one pipeline config (a PipelineConfig, a
        ``{"stages": ...}`` mapping or a config file): ``{stage: fingerprint}`` for them and
        everything they read — resolve a run's whole feature set once."""
        from avpipe.pipeline.resolve import resolve_fingerprints

        return resolve_fingerprints(self.index, list(stages), config)

    # -- read -------------------------------------------------------------------------------
    def read(self, stage_or_fingerprint: str, video: str, *, config: Any = None,
             fingerprint: str | None = None) -> ShardEntry:
        """One complete entry of ``video`` (key, content id or id prefix).

        ``stage_or_fingerprint`` is a stage name (resolved with ``config``, see :meth:`resolve`)
        or a fingerprint (prefix). ``fingerprint=`` pins one explicitly (``config`` is then not
        allowed). See the module docstring for the errors."""
        if fingerprint is not None and config is not None:
            raise ValueError("pass either config= or fingerprint=, not both")
        cid = self.resolve_video(video)
        keys = self.index.keys_for(cid)
        key = video if video in keys else (keys or [None])[0]
        token = fingerprint
        if token is None and stage_or_fingerprint not in self.index.stages() \
                and _HEX_RE.match(stage_or_fingerprint) and config is None:
            token = stage_or_fingerprint
            if self._resolve_fingerprint(token) is None:
                raise NotCached(f"{token!r} is neither a cached stage "
                                f"({', '.join(self.index.stages()) or 'none yet'}) nor a fingerprint")
        if token is not None:
            fp = self._resolve_fingerprint(token)
            if fp is None:
                raise NotCached(f"unknown fingerprint {token!r}")
            row = self.index.fingerprint_row(fp) or {}
            stage = row.get("stage", stage_or_fingerprint)
            if fingerprint is not None and stage != stage_or_fingerprint and stage_or_fingerprint != fp:
                raise NotCached(f"fingerprint {fp[:16]} belongs to stage {stage!r}, not {stage_or_fingerprint!r}")
        else:
            stage = stage_or_fingerprint
            try:
                fp = self.resolve(stage, config)
            except AmbiguousRead:
                raise
            except NotCached as e:
                others = self._other_configs(stage, cid, None)
                if others:
                    wanted = getattr(e, "wanted", None) or f"{stage} under the requested config"
                    raise self._ambiguous(stage, video, others, f"no fingerprint of {wanted} is cached") from e
                raise NotCached(f"{self._missing_message(stage, video, cid, None)} ({e})") from e
        hit = self.index.entry(fp, cid)
        if hit is None:
            others = [] if token is not None else self._other_configs(stage, cid, fp)
            if others:
                raise self._ambiguous(stage, video, others,
                                      f"the requested config's fingerprint {fp[:16]} has no entry for it")
            raise NotCached(self._missing_message(stage, video, cid, fp))
        shard = self._existing_shard(hit[0], stage, video)
        return ShardEntry(shard, stage=stage, fingerprint=fp, content_id=cid,
                          key=key, timestamps=self._timestamps(stage, fp, cid, hit[0], video))

    def _other_configs(self, stage: str, cid: str, fp: str | None) -> list[dict[str, Any]]:
        """Fingerprint rows of ``stage`` (other than ``fp``) that have an entry for ``cid``."""
        have = {e["fingerprint"] for e in self.index.entries(stage=stage, content_id=cid)} - {fp}
        return [r for r in self.index.fingerprint_rows(stage) if r["fingerprint"] in have]

    def _ambiguous(self, stage: str, video: str, rows: list[dict[str, Any]], why: str) -> AmbiguousRead:
        from avpipe.pipeline.resolve import describe

        """One message, each fact once: what was asked (``why``), which configs could be meant,
        how to pick one."""
        pick = f"fingerprint={rows[0]['fingerprint'][:16]!r}" if len(rows) == 1 else "fingerprint=<one of them>"
        return AmbiguousRead(
            f"video {video!r}: {why}; other configs of {stage!r} have one: {describe(rows)}. "
            f"Pick one with {pick} (or config= its options); a stage name never silently means another config",
            [(r["fingerprint"], json.loads(r["config_json"])) for r in rows])

    def _timestamps(self, stage: str, fp: str, cid: str, shard: str, video: str) -> Any:
        """Seconds of each frame: the probe entry this fingerprint was computed from (for
        precomputed features, which name none, the default probe config's entry), else None."""
        import numpy as np

        if stage == PROBE:
            pshard = shard
        else:
            row = self.index.fingerprint_row(fp)
            pfp = (row or {}).get("upstream", {}).get(PROBE)
            if pfp is None:  # precomputed features name no probe: the default probe's time base
                try:
                    pfp = self.resolve(PROBE)
                except (NotCached, ValueError):
                    pfp = None
            hit = self.index.entry(pfp, cid) if pfp else None
            if hit is None:
                return None
            pshard = hit[0]
        import h5py

        with h5py.File(self._existing_shard(pshard, PROBE, video), "r") as h5:
            return np.asarray(h5[cid]["data"][()], dtype=np.float64)

    def _missing_message(self, stage: str, video: str, cid: str, fp: str | None) -> str:
        have = [f"{e['stage']}@{e['fingerprint'][:12]}" for e in self.index.entries(content_id=cid)]
        fails = [f for f in self.index.failures(content_id=cid) if f.stage == stage]
        msg = f"no cached {stage!r} entry" + (f" with fingerprint {fp[:16]}" if fp else "")
        msg += f" for video {video!r} (content id {cid[:16]})"
        msg += "; cached for this video: " + (", ".join(have) if have else "nothing")
        if fails:
            msg += f"; {stage} failed: {fails[0].error_type}: {fails[0].message}"
        return msg

    # -- listings ---------------------------------------------------------------------------
    def list(self, stage: str | None = None) -> list[EntryInfo]:
        keys: dict[str, list[str]] = {}
        for k, c in self.index.videos():
            keys.setdefault(c, []).append(k)
        return [EntryInfo(e["stage"], e["fingerprint"], e["content_id"], sorted(keys.get(e["content_id"], [])),
                          e["n_rows"], e["shard"], e["created"])
                for e in self.index.entries(stage=stage)]

    def videos(self) -> list[tuple[str, str]]:
        return self.index.videos()

    def fingerprints(self, stage: str | None = None) -> list[FingerprintInfo]:
        counts = dict(self.index.db.execute("SELECT fingerprint, COUNT(*) FROM entries GROUP BY fingerprint"))
        fails = dict(self.index.db.execute("SELECT fingerprint, COUNT(*) FROM failures GROUP BY fingerprint"))
        return [FingerprintInfo(r["fingerprint"], r["stage"], r["version"], json.loads(r["config_json"]),
                                r["weights_id"], r["upstream"], r["created"],
                                counts.get(r["fingerprint"], 0), fails.get(r["fingerprint"], 0))
                for r in self.index.fingerprint_rows(stage)]

    def failures(self, stage: str | None = None) -> list[FailureInfo]:
        return self.index.failures(stage)
