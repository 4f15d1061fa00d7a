"""Per-cell claims: several sweep processes (or machines) on one ``--out`` train each cell once.

Why: two sweeps started on the same folder would each train every cell into the same run folders
at once. So a cell is *claimed* before it trains: an exclusive ``flock`` on ``<cell>/.claim``, held
for the whole training. The kernel drops it when the claimant dies (even by SIGKILL), so a cell
whose claimant died is simply claimed again by the next sweep, which resumes its checkpoint.
The file also records who holds it (host, pid, time) so a sweep can say where a cell is running.

On a network filesystem the lock is only as good as the filesystem's: Linux NFS clients turn
``flock`` into NFS byte-range locks (NFSv4, or v3 with ``lockd``), which work across machines; a
mount with ``nolock`` or ``local_lock=all`` makes locks per machine (docs/scale.md#shared-filesystems).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

CLAIM = ".claim"

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - no flock: claims are not available, every cell is "ours"
    fcntl = None  # type: ignore[assignment]


def holder_text() -> str:
    """``host:pid`` of this process, the words a claim and a lock report their holder with."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Claim:
    """An exclusive claim on one cell's folder; release it (or let the process die) to give it up."""

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)  # closing the descriptor drops the flock
            finally:
                self.fd = None

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(run_dir: Path) -> Claim | None:
    """Claim ``run_dir`` (created if missing) for this process, or None when another process
    (here or on another machine sharing the folder) holds it now."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    info = json.dumps({"holder": holder_text(), "host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
    try:  # who holds it, for the other sweeps' messages (best effort: the lock is what counts)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, info.encode())
    except OSError:
        pass
    return Claim(path, fd)


def claimed_by(run_dir: Path) -> str:
    """Who last claimed ``run_dir`` (``host:pid``), or ``another process`` when unknown."""
    try:
        return str(json.loads((run_dir / CLAIM).read_text()).get("holder") or "another process")
    except (OSError, ValueError):
        return "another process"
