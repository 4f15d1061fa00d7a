"""The inter-process cache lock (``fcntl.flock`` on ``<root>/.lock``).

Why: two ``extract`` runs on one cache must not plan the same work twice or race on the index.
The second one waits (saying so), then plans against what the first finished and finds it done.
``flock`` locks die with their process, so a SIGKILLed run never leaves a stale lock behind.
Readers (``Cache.read``, ``status``) never take it: SQLite WAL lets them read during a run.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class CacheLock:
    def __init__(self, root: str | Path, *, purpose: str = "extract",
                 say: Callable[[str], None] | None = None) -> None:
        self.path = Path(root) / ".lock"
        self.purpose = purpose
        self._fh: TextIO | None = None
        self._say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            self._say(f"cache {self.path.parent} is locked by {holder}; waiting for it to finish …")
            t0 = time.monotonic()
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            self._say(f"lock acquired after {time.monotonic() - t0:.1f} s")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} ({self.purpose})\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.seek(0)
                self._fh.truncate()
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> "CacheLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
