"""The SQLite index: the only truth of what is complete in a cache.

A shard on disk proves nothing; an entry exists when, and only when, its row is here. The driver
is the only writer (workers return what they wrote and the driver commits it, one transaction per
task), so SQLite's single-writer model fits, and WAL mode lets readers (the trainer, ``status``)
read while an ``extract`` runs. On a network filesystem (NFS, Lustre, ...) WAL is unsafe, and the
index uses the rollback journal instead (:mod:`avpipe.pipeline.netfs`).

Tables::

    files        path PK, key, size, mtime_ns, inode, content_id, last_seen, dev, ctime_ns
                 (content-id memo; dev and ctime_ns added later, NULL in older rows)
    fingerprints fingerprint PK, stage, version, config_json, weights_id, upstream (json), created
    entries      (fingerprint, content_id) PK, shard (relpath under the cache root), n_rows, created
    shards       relpath PK, size, mtime_ns, blake2 (of the file), created
    failures     (fingerprint, content_id) PK, stage, key, error_type, message, traceback, time,
                 transient (1: the machine failed, not the video — retried by the next run)
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avpipe.pipeline.types import CacheError, CacheReadOnly, Fingerprint

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, key TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, content_id TEXT NOT NULL, last_seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS files_stat ON files (size, mtime_ns, inode);
CREATE INDEX IF NOT EXISTS files_key ON files (key);
CREATE INDEX IF NOT EXISTS files_cid ON files (content_id);
CREATE TABLE IF NOT EXISTS fingerprints (
    fingerprint TEXT PRIMARY KEY, stage TEXT NOT NULL, version TEXT NOT NULL,
    config_json TEXT NOT NULL, weights_id TEXT, upstream TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS fingerprints_stage ON fingerprints (stage);
CREATE TABLE IF NOT EXISTS entries (
    fingerprint TEXT NOT NULL, content_id TEXT NOT NULL, shard TEXT NOT NULL,
    n_rows INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (fingerprint, content_id));
CREATE INDEX IF NOT EXISTS entries_cid ON entries (content_id);
CREATE INDEX IF NOT EXISTS entries_shard ON entries (shard);
CREATE TABLE IF NOT EXISTS shards (
    relpath TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    blake2 TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    fingerprint TEXT NOT NULL, content_id TEXT NOT NULL, stage TEXT NOT NULL, key TEXT,
    error_type TEXT NOT NULL, message TEXT NOT NULL, traceback TEXT, time REAL NOT NULL,
    transient INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (fingerprint, content_id));
CREATE INDEX IF NOT EXISTS failures_stage ON failures (stage);
"""


@dataclass(frozen=True)
class ShardRecord:
    """What a worker wrote: one durable shard and the content ids (with row counts) inside."""

    relpath: str
    size: int
    mtime_ns: int
    blake2: str
    rows: dict[str, int]  # content_id -> n_rows


@dataclass(frozen=True)
class FailureRecord:
    stage: str
    fingerprint: str
    content_id: str
    key: str | None
    error_type: str
    message: str
    traceback: str
    time: float
    transient: bool = False  # worker death, disk full: not the video's fault, retried next run


def _is_readonly_error(e: sqlite3.Error) -> bool:
    msg = str(e).lower()
    return "readonly" in msg or "read-only" in msg or "unable to open" in msg


def _write_failure(path: Path, e: sqlite3.Error) -> CacheError:
    """One clear error for a failed index write: read-only, or a full disk (with the free space)."""
    if _is_readonly_error(e):
        return CacheReadOnly(f"cache index {path} is read-only ({e}); commands that change the "
                             "cache need write access to it and its folder")
    import shutil

    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    msg = str(e).lower()
    room = f" ({free // 1024} KiB free there)" if free is not None else ""
    if "full" in msg or (free is not None and free < (1 << 20)):
        return CacheError(f"cannot write the cache index {path}: {e}; the disk holding it is full{room}. "
                          "Free some space (a few MB is enough for the index) and run again: "
                          "finished work stays cached")
    if "disk i/o" in msg:  # with room to spare this is the filesystem failing the write, not space
        return CacheError(f"cannot write the cache index {path}: {e}{room}; the filesystem failed the "
                          "write (a network or FUSE mount without locks shared between its clients, a "
                          "mount that went away, or a failing disk; docs/scale.md#shared-filesystems). "
                          "Finished work stays cached")
    return CacheError(f"cannot write the cache index {path}: {e}")


def _ro_uri(path: Path, *, immutable: bool) -> str:
    from urllib.parse import quote

    return f"file:{quote(str(path.absolute()))}?" + ("immutable=1" if immutable else "mode=ro")


def _create_with_umask(path: Path) -> None:
    """Create the index file as ``open()`` would (``0666 & ~umask``) before SQLite does.

    Why: SQLite creates its files 0644 whatever the umask, so under ``umask 002`` a lab's group
    could read but never add to a shared cache. Its ``-wal``/``-shm`` files copy this file's mode.
    Errors are left to SQLite, which reports a read-only or full disk in its own terms.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))
    except OSError:
        pass


class Index:
    """Thin typed wrapper over the SQLite file. One connection per instance (per process).

    ``readonly=True`` (every reader) opens the file with ``mode=ro`` and never writes to it, so
    a read-only cache (a shared mount, ``chmod -R a-w``) can be read. Where even that fails —
    SQLite's WAL mode needs a ``-shm`` file beside the index, which a read-only folder cannot
    get, and a ``-wal``/``-shm`` file may have vanished — it opens the file as immutable (no
    locking, no WAL), which is exact when no writer is running, i.e. on a cache nobody can write.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no cache index at {self.path}")
            self.db = self._connect_readonly()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create_with_umask(self.path)
            self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            try:
                self.db.execute("PRAGMA busy_timeout=60000")
                from avpipe.pipeline.netfs import index_journal_mode

                # WAL needs shared memory between the processes: not on a network filesystem
                self.journal_mode = index_journal_mode(self.path.parent)
                self.db.execute(f"PRAGMA journal_mode={self.journal_mode}")
                self.db.execute("PRAGMA synchronous=NORMAL")
                had_schema = has_tables(self.db)
                self.db.executescript(_SCHEMA)
                _add_failures_transient(self.db)
                _add_files_identity(self.db)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                _record_created(self.db, had_schema)
            except sqlite3.DatabaseError as e:  # read-only, full disk, not a database
                self.db.close()
                raise _write_failure(self.path, e) from e
        self.db.execute("PRAGMA busy_timeout=60000")

    def _connect_readonly(self) -> "_ReadConnection":
        return _ReadConnection(self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def created(self) -> float | None:
        """When this index was made (``meta.created``); None where the index has no such row."""
        try:
            row = self.db.execute("SELECT v FROM meta WHERE k = 'created'").fetchone()
        except (sqlite3.DatabaseError, CacheError):
            return None
        return float(row[0]) if row else None

    def set_created(self, when: float) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('created', ?)", (repr(float(when)),))

    def has_tables(self) -> bool:
        try:
            return has_tables(self.db)
        except (sqlite3.DatabaseError, CacheError):
            return False

    # -- transactions -----------------------------------------------------------------------
    def _tx(self) -> "_Tx":
        return _Tx(self.db, self.path)

    # -- files (content-id memo) ------------------------------------------------------------
    def file_memo(self) -> dict[tuple[int, int, int, int, int], str]:
        """(dev, inode, size, mtime_ns, ctime_ns) → content id, for every file seen. One query.

        Why the device and ctime: an inode number is only unique within one filesystem (two
        mounts can hold different files with equal size, inode and mtime), and mtime can be set
        back by anyone (``touch -d``) while ctime cannot. Rows written before these columns
        existed have NULLs and never match: those files are hashed once more."""
        if not _has_column(self.db, "files", "ctime_ns"):
            return {}
        return {(d, i, s, m, c): cid for d, i, s, m, c, cid in self.db.execute(
            "SELECT dev, inode, size, mtime_ns, ctime_ns, content_id FROM files "
            "WHERE dev IS NOT NULL AND ctime_ns IS NOT NULL")}

    def upsert_files(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """rows of (path, key, size, mtime_ns, inode, content_id[, dev, ctime_ns]); last_seen = now.
        Rows without dev/ctime_ns (precomputed features: no file) store NULLs there."""
        now = time.time()
        full = [(*r[:6], now, *(tuple(r[6:8]) + (None, None))[:2]) for r in rows]
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO files (path, key, size, mtime_ns, inode, content_id, last_seen, "
                "dev, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", full)

    def videos(self) -> list[tuple[str, str]]:
        """(key, content_id) pairs known, most recently seen first per key."""
        return [(k, c) for k, c in self.db.execute(
            "SELECT key, content_id FROM files GROUP BY key, content_id "
            "ORDER BY key, MAX(last_seen) DESC")]

    def content_ids_for_key(self, key: str) -> list[str]:
        return [c for (c,) in self.db.execute(
            "SELECT content_id FROM files WHERE key = ? GROUP BY content_id "
            "ORDER BY MAX(last_seen) DESC", (key,))]

    def keys_for(self, content_id: str) -> list[str]:
        return [k for (k,) in self.db.execute(
            "SELECT DISTINCT key FROM files WHERE content_id = ? ORDER BY key", (content_id,))]

    def paths_for(self, content_id: str) -> list[str]:
        """Paths where files with these bytes were discovered, most recently seen first."""
        return [p for (p,) in self.db.execute(
            "SELECT path FROM files WHERE content_id = ? ORDER BY last_seen DESC", (content_id,))]

    def content_ids_with_prefix(self, prefix: str) -> list[str]:
        like = prefix.replace("%", "").replace("_", "") + "%"
        rows = self.db.execute(
            "SELECT content_id FROM files WHERE content_id LIKE ? UNION "
            "SELECT content_id FROM entries WHERE content_id LIKE ? UNION "
            "SELECT content_id FROM failures WHERE content_id LIKE ?", (like, like, like))
        return sorted({c for (c,) in rows if c.startswith(prefix)})

    # -- fingerprints -----------------------------------------------------------------------
    def add_fingerprint(self, fp: Fingerprint) -> None:
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fp.value, fp.stage, fp.version, fp.config_json, fp.weights_id,
                 fp.upstream_json(), time.time()))

    def fingerprint_rows(self, stage: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT fingerprint, stage, version, config_json, weights_id, upstream, created FROM fingerprints"
        args: tuple[Any, ...] = ()
        if stage is not None:
            q += " WHERE stage = ?"
            args = (stage,)
        q += " ORDER BY stage, created"
        cols = ("fingerprint", "stage", "version", "config_json", "weights_id", "upstream", "created")
        out = []
        for row in self.db.execute(q, args):
            d = dict(zip(cols, row))
            d["upstream"] = json.loads(d["upstream"])
            out.append(d)
        return out

    def fingerprint_row(self, fingerprint: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT fingerprint, stage, version, config_json, weights_id, upstream, created "
            "FROM fingerprints WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            return None
        cols = ("fingerprint", "stage", "version", "config_json", "weights_id", "upstream", "created")
        d = dict(zip(cols, row))
        d["upstream"] = json.loads(d["upstream"])
        return d

    def stages(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT DISTINCT stage FROM fingerprints ORDER BY stage")]

    def fingerprints_with_prefix(self, prefix: str) -> list[str]:
        like = prefix.replace("%", "").replace("_", "") + "%"
        return [f for (f,) in self.db.execute(
            "SELECT fingerprint FROM fingerprints WHERE fingerprint LIKE ?", (like,))
            if f.startswith(prefix)]

    def downstream_fingerprints(self, roots: Iterable[str]) -> set[str]:
        """Every known fingerprint that reads any of ``roots``, transitively (excluding roots)."""
        rows = [(r["fingerprint"], set(r["upstream"].values())) for r in self.fingerprint_rows()]
        found: set[str] = set()
        frontier = set(roots)
        while frontier:
            nxt = {fp for fp, ups in rows if ups & frontier and fp not in found}
            found |= nxt
            frontier = nxt
        return found - set(roots)

    # -- entries ----------------------------------------------------------------------------
    def done(self, fingerprint: str) -> set[str]:
        """Content ids with a complete entry for ``fingerprint``. One query."""
        return {c for (c,) in self.db.execute(
            "SELECT content_id FROM entries WHERE fingerprint = ?", (fingerprint,))}

    def entry_shards(self, fingerprint: str) -> dict[str, str]:
        """content id → shard relpath for every entry of ``fingerprint``. One query."""
        return dict(self.db.execute(
            "SELECT content_id, shard FROM entries WHERE fingerprint = ?", (fingerprint,)))

    def failed(self, fingerprint: str) -> set[str]:
        """Content ids with a recorded *deterministic* failure (transient ones are retried)."""
        q = "SELECT content_id FROM failures WHERE fingerprint = ?"
        if _has_transient(self.db):
            q += " AND transient = 0"
        return {c for (c,) in self.db.execute(q, (fingerprint,))}

    def shards_of(self, fingerprint: str) -> list[tuple[str, int | None, int | None]]:
        """Distinct shards holding entries of ``fingerprint`` with their recorded size/mtime."""
        return list(self.db.execute(
            "SELECT DISTINCT e.shard, s.size, s.mtime_ns FROM entries e "
            "LEFT JOIN shards s ON s.relpath = e.shard WHERE e.fingerprint = ?", (fingerprint,)))

    def entry(self, fingerprint: str, content_id: str) -> tuple[str, int, float] | None:
        row = self.db.execute(
            "SELECT shard, n_rows, created FROM entries WHERE fingerprint = ? AND content_id = ?",
            (fingerprint, content_id)).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def entries(self, stage: str | None = None, content_id: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT f.stage, e.fingerprint, e.content_id, e.shard, e.n_rows, e.created "
             "FROM entries e JOIN fingerprints f ON f.fingerprint = e.fingerprint")
        cond, args = [], []
        if stage is not None:
            cond.append("f.stage = ?")
            args.append(stage)
        if content_id is not None:
            cond.append("e.content_id = ?")
            args.append(content_id)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY f.stage, e.created"
        cols = ("stage", "fingerprint", "content_id", "shard", "n_rows", "created")
        return [dict(zip(cols, r)) for r in self.db.execute(q, args)]

    def shard_rows(self) -> list[tuple[str, int, int, str]]:
        return list(self.db.execute("SELECT relpath, size, mtime_ns, blake2 FROM shards ORDER BY relpath"))

    def referenced_shards(self) -> set[str]:
        return {s for (s,) in self.db.execute("SELECT DISTINCT shard FROM entries")}

    def drop_shards(self, relpaths: Sequence[str]) -> int:
        """Forget shards (corrupt, missing, changed): their entries stop existing. Returns the
        number of entries dropped."""
        if not relpaths:
            return 0
        n = 0
        with self._tx():
            for rp in relpaths:
                n += self.db.execute("DELETE FROM entries WHERE shard = ?", (rp,)).rowcount
                self.db.execute("DELETE FROM shards WHERE relpath = ?", (rp,))
        return n

    def drop_unreferenced_shard_rows(self) -> list[str]:
        rows = [r for (r,) in self.db.execute(
            "SELECT relpath FROM shards WHERE relpath NOT IN (SELECT DISTINCT shard FROM entries)")]
        with self._tx():
            for rp in rows:
                self.db.execute("DELETE FROM shards WHERE relpath = ?", (rp,))
        return rows

    def commit_task(self, fingerprint: str, stage: str, shard: ShardRecord | None,
                    failures: Sequence[FailureRecord], invalidate: Sequence[str] = ()) -> None:
        """Record one task's outcome atomically: the shard, its entries, its failures.

        ``invalidate``: fingerprints whose entries for the committed content ids must go (the
        dependents of a ``--force``d stage), in the same transaction, so a crash can never leave
        a recomputed stage beside stale dependents.
        """
        now = time.time()
        with self._tx():
            if shard is not None and shard.rows:
                self.db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?)",
                                (shard.relpath, shard.size, shard.mtime_ns, shard.blake2, now))
                for cid, n in shard.rows.items():
                    self.db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                                    (fingerprint, cid, shard.relpath, int(n), now))
                    self.db.execute("DELETE FROM failures WHERE fingerprint = ? AND content_id = ?",
                                    (fingerprint, cid))
                    for dfp in invalidate:
                        self.db.execute("DELETE FROM entries WHERE fingerprint = ? AND content_id = ?",
                                        (dfp, cid))
            for f in failures:
                self.db.execute("DELETE FROM entries WHERE fingerprint = ? AND content_id = ?",
                                (f.fingerprint, f.content_id))
                self.db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (f.fingerprint, f.content_id, f.stage, f.key, f.error_type,
                                 f.message, f.traceback, f.time, int(f.transient)))
                for dfp in invalidate:
                    self.db.execute("DELETE FROM entries WHERE fingerprint = ? AND content_id = ?",
                                    (dfp, f.content_id))

    def failures(self, stage: str | None = None, content_id: str | None = None) -> list[FailureRecord]:
        q = ("SELECT stage, fingerprint, content_id, key, error_type, message, traceback, time, "
             + ("transient != 0" if _has_transient(self.db) else "0") + " FROM failures")
        cond, args = [], []
        if stage is not None:
            cond.append("stage = ?")
            args.append(stage)
        if content_id is not None:
            cond.append("content_id = ?")
            args.append(content_id)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY stage, key"
        return [FailureRecord(*r[:8], bool(r[8])) for r in self.db.execute(q, args)]


def _has_transient(db: sqlite3.Connection) -> bool:
    return any(r[1] == "transient" for r in db.execute("PRAGMA table_info(failures)"))


def has_tables(db: Any) -> bool:
    """Whether the file holds an avpipe index (its ``entries`` and ``shards`` tables)."""
    names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"entries", "shards", "fingerprints"} <= names


def _has_column(db: Any, table: str, column: str) -> bool:
    return any(r[1] == column for r in db.execute(f"PRAGMA table_info({table})"))


def _add_files_identity(db: sqlite3.Connection) -> None:
    """Migration: the memo's ``dev`` and ``ctime_ns`` columns (old rows: NULL, never a memo hit)."""
    for col in ("dev", "ctime_ns"):
        if not _has_column(db, "files", col):
            db.execute(f"ALTER TABLE files ADD COLUMN {col} INTEGER")


def _record_created(db: sqlite3.Connection, had_schema: bool) -> None:
    """Remember when this index was made (``meta.created``), so ``verify`` and ``gc`` can tell an
    index that was emptied or replaced after its shards were written (it is younger than them).
    An index from before this row existed gets the time of its oldest record (0 if it has none)."""
    if db.execute("SELECT 1 FROM meta WHERE k = 'created'").fetchone():
        return
    created = time.time()
    if had_schema:
        row = db.execute("SELECT MIN(t) FROM (SELECT MIN(created) AS t FROM fingerprints UNION ALL "
                         "SELECT MIN(created) FROM shards UNION ALL SELECT MIN(created) FROM entries)").fetchone()
        created = float(row[0]) if row and row[0] is not None else 0.0
    db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (repr(created),))


def _add_failures_transient(db: sqlite3.Connection) -> None:
    """Migration: index files from before the ``transient`` column get it (old rows: 0)."""
    if not _has_transient(db):
        db.execute("ALTER TABLE failures ADD COLUMN transient INTEGER NOT NULL DEFAULT 0")


class _Rows(list):  # type: ignore[type-arg]
    """Fetched rows with the one cursor method the index uses."""

    def fetchone(self) -> Any:
        return self[0] if self else None


class _ReadConnection:
    """A reader's connection that never writes and survives a damaged WAL.

    It opens ``mode=ro`` (sees a running writer's commits through the WAL) and falls back to
    ``immutable=1`` — the main file alone, no locks, no ``-wal``/``-shm`` — when that cannot
    work: a folder nobody may write (no ``-shm`` can be made) or ``-wal``/``-shm`` files deleted
    under a running writer (SQLite then reports a disk I/O error on every read). Rows are fetched
    eagerly, so the fallback can retry a query whole.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.immutable = False
        wal = Path(f"{path}-wal")
        pending = wal.exists() and wal.stat().st_size > 0  # commits not yet in the main file
        self._db = self._open(immutable=not os.access(path.parent, os.W_OK) and not pending)

    def _open(self, *, immutable: bool) -> sqlite3.Connection:
        self.immutable = immutable
        db = sqlite3.connect(_ro_uri(self.path, immutable=immutable), uri=True, timeout=60,
                             isolation_level=None)
        db.execute("PRAGMA busy_timeout=60000")
        return db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> _Rows:
        try:
            return _Rows(self._db.execute(sql, args).fetchall())
        except sqlite3.DatabaseError as e:
            if "locked" in str(e).lower() or "busy" in str(e).lower():
                raise  # a writer holds it longer than busy_timeout: not damage, do not bypass locking
            if self.immutable or not isinstance(e, sqlite3.OperationalError):
                raise CacheError(f"cannot read the cache index {self.path}: {e}") from e
            self._db.close()
            self._db = self._open(immutable=True)
            try:
                return _Rows(self._db.execute(sql, args).fetchall())
            except sqlite3.DatabaseError as e2:
                raise CacheError(f"cannot read the cache index {self.path}: {e2} (after: {e})") from e2

    def close(self) -> None:
        self._db.close()


class _Tx:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): one atomic write. A write that SQLite refuses
    (read-only file, full disk) becomes one clear :class:`CacheError`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e).lower():
                raise
            raise _write_failure(self.path, e) from e

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.OperationalError as e:
                self._rollback()
                raise _write_failure(self.path, e) from e
        self._rollback()
        if isinstance(exc, sqlite3.OperationalError) and "locked" not in str(exc).lower():
            raise _write_failure(self.path, exc) from exc
        return False

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
