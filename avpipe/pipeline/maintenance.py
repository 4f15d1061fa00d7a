"""Cache upkeep: ``verify`` (re-hash and open everything), ``gc`` (delete what the index no longer
references), ``du`` (disk usage). ``verify`` and ``gc`` take the cache lock themselves (from the
CLI and from Python alike), so they never race an ``extract``: a gc waits for a running extract,
which holds the lock from planning to its last commit, and so never deletes a shard a worker has
written but the driver has not yet committed. ``du`` and ``gc(dry_run=True)`` only read.

Why verify and gc first check the index itself (:func:`index_problem`): both trust the index as the
list of what exists. An index that was truncated, lost its tables or was replaced by a fresh one
lists nothing, so verify would call the cache clean and gc would delete every shard. They refuse
instead and name ``avpipe cache rebuild-index`` (:mod:`avpipe.pipeline.rebuild`), which recovers
the entries from the shards' own attributes.

Why gc keeps some unreferenced temp files: a shard writer holds an flock on its temporary file
until it is renamed into place, so a temp file held by a live process is never deleted, even
if the cache lock was bypassed.

Why verify drops entries instead of repairing them: the index is the truth of what is complete; a
shard whose bytes no longer match what was committed cannot be trusted, so its entries stop
existing and the next ``extract`` recomputes them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from avpipe.pipeline.discover import content_hash
from avpipe.pipeline.lock import is_held
from avpipe.pipeline.store import INDEX_NAME, SHARDS_DIR, Cache
from avpipe.pipeline.types import CacheError

#: Seconds of clock slack when comparing the index's creation time with shard mtimes.
CLOCK_SLACK_S = 2.0


class IndexUnsafe(CacheError):
    """The index cannot be trusted to say what exists (empty, tables missing, younger than the
    shards): verify and gc refuse to act on it."""


def shard_files(cache: Cache) -> list[Path]:
    """Committed shard files on disk (``shards/<stage>/<fp16>/<name>.h5``, no temp files)."""
    base = cache.root / SHARDS_DIR
    if not base.is_dir():
        return []
    return [p for p in base.glob("*/*/*.h5") if p.is_file() and not p.name.startswith(".")]


def index_problem(cache: Cache) -> str | None:
    """What makes the index unfit to decide what to keep or drop; None when it is fine."""
    import time

    where = cache.root / INDEX_NAME
    fix = ("; `avpipe cache rebuild-index` recovers the entries from the shards' own attributes "
           "(it keeps the damaged index beside it)")
    if not cache.index.has_tables():
        return f"the cache index {where} has no avpipe tables (empty, truncated or not an index){fix}"
    created = cache.index.created()
    if created is None:
        return None
    older = []
    for p in shard_files(cache):
        try:
            if p.stat().st_mtime < created - CLOCK_SLACK_S:
                older.append(p)
        except OSError:
            continue
    if older:
        oldest = min(p.stat().st_mtime for p in older)
        stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))  # noqa: E731
        return (f"the cache index {where} is younger than {len(older)} shard file(s) (index made "
                f"{stamp(created)}, oldest shard written {stamp(oldest)}): it was emptied or replaced "
                f"after they were written, so it cannot say which shards are still needed{fix}")
    return None


def check_index(cache: Cache) -> None:
    """Raise :class:`IndexUnsafe` when :func:`index_problem` finds one."""
    why = index_problem(cache)
    if why:
        raise IndexUnsafe(why)


@dataclass
class VerifyReport:
    checked_shards: int = 0
    checked_entries: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (shard relpath, reason)
    dropped_entries: int = 0

    @property
    def ok(self) -> bool:
        return not self.bad


def verify(cache: Cache, *, rehash: bool = True) -> VerifyReport:
    """Re-hash every shard the index names and open every group an entry points at; drop the
    entries of shards that are missing, changed or unreadable. Holds the cache lock."""
    with cache.lock("cache verify"):
        check_index(cache)
        return _verify(cache, rehash)


def _verify(cache: Cache, rehash: bool) -> VerifyReport:
    import h5py

    rep = VerifyReport()
    shard_rows = {rp: (size, blake) for rp, size, _m, blake in cache.index.shard_rows()}
    by_shard: dict[str, list[str]] = {}
    for e in cache.index.entries():
        by_shard.setdefault(e["shard"], []).append(e["content_id"])
    for rp in sorted(set(shard_rows) | set(by_shard)):
        rep.checked_shards += 1
        cids = by_shard.get(rp, [])
        rep.checked_entries += len(cids)
        reason = _check_one(cache, rp, shard_rows.get(rp), cids, rehash, h5py)
        if reason:
            rep.bad.append((rp, reason))
    if rep.bad:
        rep.dropped_entries = cache.index.drop_shards([rp for rp, _ in rep.bad])
    return rep


def _check_one(cache: Cache, rp: str, row: tuple[int, str] | None, cids: list[str],
               rehash: bool, h5py: object) -> str | None:
    if row is None:
        return "entries point at a shard the index has no record of"
    try:
        path = cache.shard_path(rp)
    except ValueError as e:
        return str(e)
    if not path.is_file():
        return "missing on disk"
    size, blake = row
    if path.stat().st_size != size:
        return f"size changed ({path.stat().st_size} bytes, index says {size})"
    if rehash and content_hash(path) != blake:
        return "content hash differs from the one recorded when it was written"
    try:
        with h5py.File(path, "r") as h5:  # type: ignore[attr-defined]
            for cid in cids:
                if cid not in h5:
                    return f"group {cid[:16]} missing"
                g = h5[cid]
                _ = g["data"].shape, dict(g.attrs)
                if g["data"].size:
                    g["data"][:1]
    except Exception as e:  # noqa: BLE001 - any read error means corrupt
        return f"unreadable HDF5 ({type(e).__name__}: {e})"
    return None


@dataclass
class GcReport:
    files: list[str] = field(default_factory=list)  # relpaths deleted (or to delete)
    bytes: int = 0
    dry_run: bool = False
    kept_live: list[str] = field(default_factory=list)  # temp files a live writer holds


def gc(cache: Cache, *, dry_run: bool = False) -> GcReport:
    """Delete shard files and temp files the index does not reference (orphans of killed runs,
    entries dropped by verify or forced reruns), then empty folders. Holds the cache lock
    (``dry_run`` only reads and takes none)."""
    if dry_run:
        check_index(cache)
        return _gc(cache, True)
    with cache.lock("cache gc"):
        check_index(cache)
        return _gc(cache, False)


def _gc(cache: Cache, dry_run: bool) -> GcReport:
    rep = GcReport(dry_run=dry_run)
    if not dry_run:
        cache.index.drop_unreferenced_shard_rows()
    keep = cache.index.referenced_shards()
    base = cache.root / SHARDS_DIR
    if not base.is_dir():
        return rep
    for p in sorted(base.rglob("*")):
        if not p.is_file() and not p.is_symlink():
            continue
        rp = p.relative_to(cache.root).as_posix()
        if rp in keep:
            continue
        if p.name.endswith(".tmp") and is_held(p):  # a live writer's shard in the making
            rep.kept_live.append(rp)
            continue
        rep.files.append(rp)
        try:
            rep.bytes += p.lstat().st_size
        except OSError:
            pass
        if not dry_run:
            p.unlink(missing_ok=True)
    if not dry_run:
        for d in sorted((d for d in base.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
    return rep


def disk_usage(cache: Cache) -> dict[str, object]:
    """Bytes per stage and fingerprint (referenced shards), plus unreferenced bytes and the index."""
    keep = cache.index.referenced_shards()
    per: dict[str, dict[str, int]] = {}
    unreferenced = 0
    base = cache.root / SHARDS_DIR
    for p in (base.rglob("*") if base.is_dir() else []):
        if not p.is_file():
            continue
        rp = p.relative_to(cache.root).as_posix()
        size = p.stat().st_size
        if rp not in keep:
            unreferenced += size
            continue
        parts = rp.split("/")
        stage, fp16 = parts[1], parts[2]
        per.setdefault(stage, {}).setdefault(fp16, 0)
        per[stage][fp16] += size
    index_bytes = sum(os.path.getsize(p) for p in cache.root.glob("index.sqlite*") if p.is_file())
    total = sum(sum(v.values()) for v in per.values()) + unreferenced + index_bytes
    return {"stages": per, "unreferenced": unreferenced, "index": index_bytes, "total": total}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


