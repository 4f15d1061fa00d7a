"""``cache rebuild-index``: recover a lost or damaged index from the shards themselves.

Why it can: every shard group carries its provenance as HDF5 attributes (stage, version,
fingerprint, config, weights id, upstream fingerprints, content id — see
:mod:`avpipe.pipeline.shard`), which is everything an ``entries``/``fingerprints`` row holds.
What the shards cannot tell (which file names had which bytes; recorded failures) is copied
from the old index when it can still be read, else the next ``extract`` rediscovers the names.

Safety: the new index is built under a temporary name while the cache lock is held, then the
old index (with its ``-wal``/``-shm``) is moved aside as ``index.sqlite.damaged-<time>`` and the
new one renamed into place, so a crash at any point leaves one complete index and nothing is
deleted. A shard that cannot be read, or whose attributes disagree with where it lies (a stage
or fingerprint folder that does not match), is left out and reported.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from avpipe.pipeline.atomic import fsync_dir
from avpipe.pipeline.discover import content_hash
from avpipe.pipeline.index import Index, ShardRecord, has_tables
from avpipe.pipeline.lock import CacheLock
from avpipe.pipeline.store import INDEX_NAME, SHARDS_DIR
from avpipe.pipeline.types import Fingerprint

_REQUIRED = ("stage", "version", "fingerprint", "content_id", "config_json", "upstream_json")


@dataclass
class RebuildReport:
    shards: int = 0
    entries: int = 0
    fingerprints: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (shard relpath, why)
    old_index: str | None = None  # where the previous index was moved
    copied_files: int = 0
    copied_failures: int = 0


@dataclass
class _Found:
    relpath: str
    size: int
    mtime_ns: int
    rows: dict[str, int]
    fps: dict[str, Fingerprint]


def _read_shard(root: Path, path: Path) -> _Found:
    """The entries one shard holds, checked against its place in the tree. Raises ValueError."""
    import h5py

    rel = path.relative_to(root).as_posix()
    _, stage_dir, fp_dir, _ = rel.split("/")
    st = path.stat()
    rows: dict[str, int] = {}
    fps: dict[str, Fingerprint] = {}
    with h5py.File(path, "r") as h5:
        for name in h5:
            g = h5[name]
            a = {k: g.attrs[k] for k in g.attrs}
            missing = [k for k in _REQUIRED if k not in a]
            if missing:
                raise ValueError(f"group {name[:16]} lacks provenance attributes {missing}")
            a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in a.items()}
            if a["content_id"] != name or a["stage"] != stage_dir or not str(a["fingerprint"]).startswith(fp_dir):
                raise ValueError(f"group {name[:16]} says stage {a['stage']!r}, fingerprint "
                                 f"{str(a['fingerprint'])[:16]}: not the folder it lies in")
            if "data" not in g:
                raise ValueError(f"group {name[:16]} has no data")
            shape = g["data"].shape
            fp = str(a["fingerprint"])
            rows[name] = int(shape[0]) if shape else 0
            fps.setdefault(fp, Fingerprint(fp, str(a["stage"]), str(a["version"]), str(a["config_json"]),
                                           str(a.get("weights_id", "")) or None,
                                           json.loads(str(a["upstream_json"]))))
    if len(fps) > 1:
        raise ValueError(f"holds entries of {len(fps)} fingerprints (a shard holds one)")
    return _Found(rel, st.st_size, st.st_mtime_ns, rows, fps)


def _copy_from_old(old: Path, new: Index, rep: RebuildReport) -> None:
    """File names (the content-id memo) and recorded failures from the old index, if readable."""
    try:
        db = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        if not has_tables(db):
            return
        cols = [r[1] for r in db.execute("PRAGMA table_info(files)")]
        want = [c for c in ("path", "key", "size", "mtime_ns", "inode", "content_id", "last_seen",
                            "dev", "ctime_ns") if c in cols]
        files = db.execute(f"SELECT {', '.join(want)} FROM files").fetchall()
        fcols = [r[1] for r in db.execute("PRAGMA table_info(failures)")]
        fails = db.execute(f"SELECT {', '.join(fcols)} FROM failures").fetchall()
    except sqlite3.Error:
        return
    finally:
        db.close()
    with new._tx():
        new.db.executemany(f"INSERT OR REPLACE INTO files ({', '.join(want)}) VALUES "
                           f"({', '.join('?' * len(want))})", files)
        new.db.executemany(f"INSERT OR REPLACE INTO failures ({', '.join(fcols)}) VALUES "
                           f"({', '.join('?' * len(fcols))})", fails)
    rep.copied_files, rep.copied_failures = len(files), len(fails)


def rebuild_index(root: str | Path, *, say: object = None) -> RebuildReport:
    """Rebuild ``<root>/index.sqlite`` from the shard files (see the module docstring)."""
    root = Path(root).expanduser().absolute()
    rep = RebuildReport()
    if not (root / SHARDS_DIR).is_dir() and not (root / INDEX_NAME).exists():
        raise FileNotFoundError(f"no avpipe cache at {root} (neither {INDEX_NAME} nor {SHARDS_DIR}/)")
    old = root / INDEX_NAME
    with CacheLock(root, purpose="cache rebuild-index", say=say):  # type: ignore[arg-type]
        found: list[_Found] = []
        for path in sorted((root / SHARDS_DIR).glob("*/*/*.h5")):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                f = _read_shard(root, path)
                if not f.fps:
                    raise ValueError("holds no entries")
                found.append(f)
            except Exception as e:  # noqa: BLE001 - an unreadable shard is reported, not fatal
                rep.skipped.append((path.relative_to(root).as_posix(), f"{type(e).__name__}: {e}"))
        # one entry per (fingerprint, video): the newest shard wins (a forced rerun's)
        owner: dict[tuple[str, str], _Found] = {}
        for f in sorted(found, key=lambda f: f.mtime_ns):
            for cid in f.rows:
                owner[(next(iter(f.fps)), cid)] = f
        tmp = root / f"{INDEX_NAME}.rebuild-{os.getpid()}"
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        new = Index(tmp)
        try:
            for f in found:
                keep = {cid: n for cid, n in f.rows.items() if owner[(next(iter(f.fps)), cid)] is f}
                if not keep:
                    continue
                fp = next(iter(f.fps.values()))
                new.add_fingerprint(fp)
                new.commit_task(fp.value, fp.stage, ShardRecord(f.relpath, f.size, f.mtime_ns,
                                                                content_hash(root / f.relpath), keep), [])
                rep.shards += 1
                rep.entries += len(keep)
            rep.fingerprints = len(new.fingerprint_rows())
            if old.exists():
                _copy_from_old(old, new, rep)
            oldest = min((f.mtime_ns for f in found), default=time.time_ns())
            new.set_created(oldest / 1e9 - 1.0)
            new.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            new.db.execute("PRAGMA journal_mode=DELETE")  # one file to rename
        finally:
            new.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if old.exists():
            aside = root / f"{INDEX_NAME}.damaged-{stamp}"
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{old}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            rep.old_index = aside.name
        os.replace(tmp, old)
        fsync_dir(root)
    return rep
