"""The inter-process cache lock (``filelock`` on ``<root>/.lock``).

Why: two commands that change one cache (``extract``, ``cache gc``, ``cache verify``, ``ingest``)
must not interleave: a second ``extract`` would plan the same work twice, and a ``gc`` during an
``extract`` would delete the shard a worker just wrote before the driver commits it. Every writer
takes this lock for its whole run; the second one waits (saying so), then sees what the first
finished. Readers (``Cache.read``, ``status``, ``inspect``, ``cache ls``) never take it: SQLite
WAL lets them read during a run, and they must work on a cache they cannot write.

``filelock`` uses ``flock`` on POSIX (released by the kernel when the process dies, so a SIGKILLed
run never leaves a stale lock) and the portable equivalent elsewhere. Locks are per path within
one process (re-entrant), so ``maintenance.gc`` called inside a locked block does not deadlock.
"""
from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from avpipe.pipeline.types import CacheError, CacheReadOnly

LOCK_NAME = ".lock"


class CacheLockError(CacheError):
    """The lock file cannot be created or written (disk full, read-only cache): one line naming it."""


def _lock_failure(path: Path, e: OSError) -> CacheError:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheReadOnly(f"cache {path.parent} is read-only (cannot create its lock file {path}: "
                             f"{e.strerror}); commands that change the cache need write access")
    if e.errno == errno.ENOSPC:
        return CacheLockError(f"no space left on device for the cache lock file {path}; free some "
                              "space on that disk (or pass another --cache) and run again")
    return CacheLockError(f"cannot use the cache lock file {path}: {e.strerror or e}")


class CacheLock:
    """Exclusive writer lock of one cache root. Use as a context manager."""

    def __init__(self, root: str | Path, *, purpose: str = "extract",
                 say: Callable[[str], None] | None = None) -> None:
        self.path = Path(root) / LOCK_NAME
        self.purpose = purpose
        self._say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._lock: FileLock | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.path), is_singleton=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                self._say(f"cache {self.path.parent} is locked by {self._holder()}; waiting for it to finish …")
                t0 = time.monotonic()
                lock.acquire()
                self._say(f"lock acquired after {time.monotonic() - t0:.1f} s")
        except OSError as e:
            raise _lock_failure(self.path, e) from e
        self._lock = lock
        self._write_holder(f"pid {os.getpid()} ({self.purpose})\n")

    def _write_holder(self, text: str) -> None:
        """Who holds the lock, for the waiting message. Best effort: a full disk must not stop a
        run that already holds the lock."""
        try:
            with open(self.path, "w") as fh:
                fh.write(text)
        except OSError:
            pass

    def release(self) -> None:
        if self._lock is not None:
            try:
                if self._lock.lock_counter <= 1:
                    self._write_holder("")
            finally:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> "CacheLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
