"""Infrastructure faults: tell them apart from bad videos, and say what really happened.

Why this module exists: a worker process that dies (SIGKILL from the OOM killer, a segfault in a
native library, a full disk that crashes h5py) surfaces as one generic ``TerminatedWorkerError``
for every video of the stage; recorded as such, every video would wait for ``--retry-failed``.
The runner retries such tasks and, for the video that keeps killing its worker, records *why*
in words. Failures caused by the machine rather than the video
(worker death, disk full) are marked *transient*: the next run retries them by itself, while a
deterministic error (an unreadable file) stays recorded.

Also here: :func:`die_with_parent`, which makes a pool worker exit within seconds when the
driver process is gone (even after a SIGKILL, which runs no cleanup in the driver).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

#: error_type of a failure recorded for a video whose worker process died.
WORKER_DIED = "WorkerDied"
#: error_type of a failure recorded because the disk (of the cache) was full.
DISK_FULL = "DiskFull"
#: error_type of a failure recorded because writing the cache failed for another reason (its
#: folder vanished under the run, an HDF5 library error while writing): transient.
CACHE_WRITE = "CacheWriteFailed"
#: error_type of a result discarded because its video file changed while it was read: transient.
SOURCE_CHANGED = "SourceChanged"
#: error_type of a result not computed because the Dask cluster went away (scheduler lost, a
#: connection timed out, its future was cancelled): transient, the cluster's fault, not the video's.
CLUSTER_LOST = "ClusterLost"
#: Below this many MB free on the cache's disk, an HDF5 error while writing is taken for a full
#: disk: HDF5 reports ENOSPC as "Can't destroy cache", "can't write data" and the like.
LOW_SPACE_MB = 64.0

_WORKER_DEATH_TYPES = ("TerminatedWorkerError", "BrokenProcessPool", "KilledWorker")
_EXITCODES = re.compile(r"\b([A-Z][A-Z0-9]*)\((-?\d+)\)")
_SIGNAL_WORDS = {
    "SIGKILL": "killed by SIGKILL (the out-of-memory killer or a user)",
    "SIGSEGV": "segmentation fault (SIGSEGV) in native code",
    "SIGBUS": "bus error (SIGBUS): a memory-mapped file vanished or the disk is full",
    "SIGABRT": "aborted (SIGABRT) by a native library",
    "SIGFPE": "floating point exception (SIGFPE) in native code",
    "SIGILL": "illegal instruction (SIGILL): a library built for another CPU?",
    "SIGTERM": "terminated (SIGTERM)",
}
_DISK_FULL_WORDS = ("no space left on device", "errno = 28", "disk quota exceeded")


def is_worker_death(exc: BaseException) -> bool:
    """True for the errors a process pool raises when one of its processes died."""
    return any(t.__name__ in _WORKER_DEATH_TYPES for t in type(exc).__mro__)


# What distributed raises when the scheduler (or the connection to it) is gone. Matched by name so
# this module never imports distributed (a local run does not have to have it).
_CLUSTER_FAULT_TYPES = ("FutureCancelledError", "FuturesCancelledError", "CancelledError", "CommClosedError",
                        "StreamClosedError", "TimeoutError", "ClosedClientError", "RPCClosed")
_CLUSTER_FAULT_WORDS = ("scheduler-connection-lost", "timed out trying to connect", "commclosederror",
                        "scheduler is closing", "connection to the scheduler", "stream is closed",
                        "client is closing", "cannot connect", "connection refused")


def is_cluster_fault(exc: BaseException) -> bool:
    """True when an executor error says the cluster went away rather than a task failing: the
    scheduler died, the connection to it timed out or closed, or its futures were cancelled.

    Why: recorded as each video's own (permanent) failure, one lost scheduler would make every
    video of the batch wait for ``--retry-failed``. Only errors the executor raised
    are classified here; a stage's own exception never reaches this test."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(t.__name__ in _CLUSTER_FAULT_TYPES for t in type(e).__mro__):
            return True
        text = f"{type(e).__name__}: {e}".lower()
        if any(w in text for w in _CLUSTER_FAULT_WORDS):
            return True
        e = e.__cause__ or e.__context__
    return False


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT anywhere in the exception chain (h5py often hides the errno in words)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(w in str(e).lower() for w in _DISK_FULL_WORDS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _raised_in_h5py(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "h5py" in last.replace("\\", "/").split("/")


def storage_fault(exc: BaseException, cache_root: str | Path) -> tuple[str, str] | None:
    """``(error_type, message)`` when ``exc``, raised while writing a shard, is the cache's fault
    (disk full, an HDF5 or filesystem error) rather than the video's; None otherwise.

    Why: such failures must be retried by the next run, not recorded as a property of the video.
    A TypeError/ValueError (a stage returning data HDF5 cannot store) stays the video's."""
    low = free_mb(cache_root)
    if is_disk_full(exc) or (isinstance(exc, (OSError, RuntimeError)) and low is not None
                             and low < LOW_SPACE_MB):
        return DISK_FULL, disk_full_message(cache_root)
    if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and _raised_in_h5py(exc)):
        return CACHE_WRITE, f"writing the cache failed ({type(exc).__name__}: {exc}); retried by the next run"
    return None


def free_mb(path: str | Path) -> float | None:
    """Free space (MB) on the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / 1e6
    except OSError:
        return None


def disk_full_message(path: str | Path) -> str:
    """``disk full: <path>, N MB free`` — what a user must fix, in one line."""
    mb = free_mb(path)
    return f"disk full: {path}, {'?' if mb is None else f'{mb:.0f}'} MB free"


def exit_codes(exc: BaseException) -> list[tuple[str, int]]:
    """The (name, code) pairs loky appends to its message, e.g. ``{SIGKILL(-9)}``."""
    return [(n, int(c)) for n, c in _EXITCODES.findall(str(exc))]


def oom_kill_count() -> int | None:
    """The cgroup's OOM-kill counter (v2 or v1), to tell an OOM kill from a user's SIGKILL."""
    for f in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            for line in Path(f).read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
        except (OSError, ValueError):
            continue
    return None


def worker_death_cause(exc: BaseException, *, stderr_tail: str = "", oom_before: int | None = None,
                       cache_root: str | Path | None = None) -> str:
    """One line saying why a worker died, from its exit code, its stderr and the machine."""
    tail = stderr_tail.lower()
    if any(w in tail for w in _DISK_FULL_WORDS) and cache_root is not None:
        return "worker died: " + disk_full_message(cache_root)
    codes = exit_codes(exc)
    parts = []
    for name, code in codes:
        if name == "SIGKILL":
            oom_now = oom_kill_count()
            if oom_before is not None and oom_now is not None and oom_now > oom_before:
                parts.append("killed by the out-of-memory killer (SIGKILL): the video needs more memory")
                continue
        parts.append(_SIGNAL_WORDS.get(name, f"exit status {code}" if name == "EXIT" else f"{name}({code})"))
    cause = "; ".join(dict.fromkeys(parts)) or f"{type(exc).__name__}"
    if "fatal python error" in tail:
        line = next(ln for ln in stderr_tail.splitlines() if "Fatal Python error" in ln)
        cause += f" [{line.strip()}]"
    if cache_root is not None:
        mb = free_mb(cache_root)
        if mb is not None and mb < 50:
            cause += f" ({disk_full_message(cache_root)})"
    return "worker process died: " + cause


# -- workers die with the driver -----------------------------------------------------------------
_guard_lock = threading.Lock()
_guarded_for: int | None = None


def die_with_parent(driver_pid: int, poll_s: float = 1.0) -> None:
    """Make this (pool worker) process exit when ``driver_pid`` is gone. Idempotent, cheap.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` — the kernel kills us the moment the parent
    exits, however it died. Everywhere (and as a backstop): a daemon thread polls the parent
    pid every ``poll_s`` and exits the process when we have been re-parented. Never call it in
    the driver itself (it would tie the driver to its shell).
    """
    global _guarded_for
    if os.getpid() == driver_pid:
        return
    with _guard_lock:
        if _guarded_for == driver_pid:
            return
        _guarded_for = driver_pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != driver_pid:  # the driver died before we could arm the guard
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != driver_pid:
                os._exit(1)

    threading.Thread(target=watch, name="avpipe-die-with-driver", daemon=True).start()
