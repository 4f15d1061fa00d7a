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

A lock file can be deleted under a running writer (``rm cache/.lock``): the next command then
creates a fresh file and "holds" it at once. So the writer also holds an ``flock`` on an open
descriptor of the cache folder itself, which no deletion can take away, and every shard writer
holds one on its temporary file until it is renamed into place, so ``gc`` can tell a live
writer's temp file from a dead one's (:func:`hold_file`, :func:`is_held`).
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import threading
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


try:  # POSIX only; elsewhere the lock file is the only lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_dir_guard = threading.Lock()
_dir_locks: dict[str, list[int]] = {}  # folder -> [descriptor, holders in this process]


def _try_flock(path: str | Path) -> tuple[int | None, bool]:
    """Open ``path`` and take an exclusive non-blocking ``flock``: (the new descriptor now holding
    it, or None; whether another descriptor holds it). Neither where flock is unavailable or the
    file cannot be opened."""
    if fcntl is None:
        return None, False
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return None, False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        return None, isinstance(e, BlockingIOError)
    return fd, False


def hold_file(path: str | Path) -> int | None:
    """Take an exclusive ``flock`` on ``path`` through a new descriptor and return it (None where
    flock is unavailable). The kernel drops it when the process dies: a held file has a live
    owner. Release with :func:`release_file`."""
    return _try_flock(path)[0]


def release_file(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)  # closing the last descriptor drops the flock
        except OSError:
            pass


def is_held(path: str | Path) -> bool:
    """Whether a live process holds ``path`` with :func:`hold_file` (False where flock is
    unavailable or the file vanished)."""
    fd, held = _try_flock(path)
    release_file(fd)
    return held


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
        try:
            self._lock_folder()
        except BaseException:
            lock.release()
            self._lock = None
            raise
        # the host too: on a shared filesystem the holder may be a process on another machine
        self._write_holder(f"pid {os.getpid()} on {socket.gethostname()} ({self.purpose})\n")

    def _lock_folder(self) -> None:
        """The lock that survives ``rm .lock``: an flock on the cache folder's own descriptor
        (re-entrant within this process, like the file lock)."""
        key = str(self.path.parent)
        with _dir_guard:
            held = _dir_locks.get(key)
            if held is not None:
                held[1] += 1
                return
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(key, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._say(f"cache {self.path.parent} is held by another process (its lock file "
                          "was deleted or replaced); waiting for it to finish …")
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):  # NFS and the like
                os.close(fd)
                raise
        with _dir_guard:
            _dir_locks[key] = [fd, 1]

    def _unlock_folder(self) -> None:
        key = str(self.path.parent)
        with _dir_guard:
            held = _dir_locks.get(key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _dir_locks[key]
        release_file(held[0])

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
                self._unlock_folder()
                self._lock.release()
                self._lock = None

    def __enter__(self) -> "CacheLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
