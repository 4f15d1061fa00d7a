"""The cache store: where shards live, how a worker writes one, and the read API.

Layout under a cache root::

    <root>/index.sqlite                              the truth (see index.py)
    <root>/.lock                                     inter-process lock (see lock.py)
    <root>/shards/<stage>/<fingerprint[:16]>/<uuid>.h5   one shard per worker task

Paths inside the cache are built only from stage names (validated identifiers), fingerprints and
uuids — never from video names — so no key (``..``, absolute, non-ASCII) can escape the root.

Read API (used by the trainer and by stages through their inputs)::

    from avpipe.pipeline.store import Cache
    c = Cache(root)
    e = c.read("faces", "clips/a.mp4")          # latest completed faces entry of that video
    e = c.read("faces", "clips/a.mp4", fingerprint="3fa2…")   # pin one fingerprint
    e.data, e.mask, e.attrs, e.timestamps

``read(stage, video)`` with a stage name resolves to the **most recently created** entry of that
stage for that video (whatever config produced it); pass ``fingerprint=`` (or a fingerprint
instead of the stage name; a unique prefix is enough) to pin one.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avpipe.pipeline.entry import ShardEntry
from avpipe.pipeline.index import FailureRecord, Index, ShardRecord
from avpipe.pipeline.stage import StageResult

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


def file_blake2(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    """A cache root. ``Cache(root)`` opens an existing cache for reading (FileNotFoundError if
    there is none, so a typo does not silently read an empty cache); ``create=True`` makes one."""

    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        ipath = self.root / INDEX_NAME
        if not create and not ipath.exists():
            raise FileNotFoundError(f"no avpipe cache at {self.root} (missing {INDEX_NAME}); "
                                    "run `avpipe extract` first or pass the right --cache")
        self.root.mkdir(parents=True, exist_ok=True)
        self.index = Index(ipath)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- paths ------------------------------------------------------------------------------
    def shard_path(self, relpath: str) -> Path:
        """Absolute path of a shard named by the index; refuses anything outside ``shards/``."""
        p = (self.root / relpath).resolve()
        if not p.is_relative_to((self.root / SHARDS_DIR).resolve()):
            raise ValueError(f"shard path {relpath!r} escapes the cache root")
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
                raise KeyError(f"content id prefix {key_or_id!r} is ambiguous: {found[:5]}")
        known = [k for k, _ in self.index.videos()]
        hint = f"; known keys include {known[:5]}" if known else "; the cache knows no videos yet"
        raise KeyError(f"unknown video {key_or_id!r} (neither a known key nor a content id){hint}")

    # -- read -------------------------------------------------------------------------------
    def _resolve_fingerprint(self, token: str) -> str | None:
        if self.index.fingerprint_row(token) is not None:
            return token
        if _HEX_RE.match(token):
            found = self.index.fingerprints_with_prefix(token)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise KeyError(f"fingerprint prefix {token!r} is ambiguous: {[f[:16] for f in found]}")
        return None

    def read(self, stage_or_fingerprint: str, video: str, *,
             fingerprint: str | None = None) -> ShardEntry:
        """One complete entry. See the module docstring for how the stage name resolves."""
        cid = self.resolve_video(video)
        key = video if video in self.index.keys_for(cid) else (self.index.keys_for(cid) or [None])[0]
        fp: str | None = None
        if fingerprint is not None:
            fp = self._resolve_fingerprint(fingerprint)
            if fp is None:
                raise KeyError(f"unknown fingerprint {fingerprint!r}")
        elif stage_or_fingerprint not in self.index.stages() and _HEX_RE.match(stage_or_fingerprint):
            fp = self._resolve_fingerprint(stage_or_fingerprint)
            if fp is None:
                raise KeyError(f"{stage_or_fingerprint!r} is neither a cached stage "
                               f"({', '.join(self.index.stages()) or 'none yet'}) nor a fingerprint")
        if fp is not None:
            hit = self.index.entry(fp, cid)
            row = self.index.fingerprint_row(fp)
            stage = row["stage"] if row else stage_or_fingerprint
            shard = hit[0] if hit else None
        else:
            stage = stage_or_fingerprint
            latest = self.index.latest_entry(stage, cid)
            fp, shard = (latest[0], latest[1]) if latest else (None, None)
        if shard is None or fp is None:
            raise KeyError(self._missing_message(stage, video, cid, fp))
        return ShardEntry(self.shard_path(shard), stage=stage, fingerprint=fp, content_id=cid,
                          key=key, timestamps=self._timestamps(stage, fp, cid, shard))

    def _timestamps(self, stage: str, fp: str, cid: str, shard: str) -> Any:
        import numpy as np

        if stage == "probe":
            pfp, pshard = fp, shard
        else:
            row = self.index.fingerprint_row(fp)
            pfp = (row or {}).get("upstream", {}).get("probe")
            hit = self.index.entry(pfp, cid) if pfp else None
            if hit is None:
                latest = self.index.latest_entry("probe", cid)
                if latest is None:
                    return None
                pfp, pshard = latest[0], latest[1]
            else:
                pshard = hit[0]
        import h5py

        with h5py.File(self.shard_path(pshard), "r") as h5:
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
