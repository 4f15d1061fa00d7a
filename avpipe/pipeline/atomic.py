"""Atomic file writes: temp name in the same folder, fsync, rename, fsync the folder.

Why: a crash (or SIGKILL) at any point must leave either the old file or the new one, never a
half-written file that a later reader could mistake for complete.

File modes: ``tempfile.mkstemp`` creates its file 0600 whatever the umask, and the rename keeps that
mode — a lab's shared cache or run folder would then be readable by its writer only. Every temp file
is therefore set to what a plain ``open(path, "w")`` would give (``0666 & ~umask``), so ``umask 022``
gives 0644 and ``umask 002`` a group-writable cache.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, without changing it where the OS can tell (Linux ``/proc``).

    Elsewhere it is read by setting and restoring it under a lock (the umask is process-wide, so
    another thread creating a file in between would otherwise get mode 0777 & ~0).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode a new regular file gets from ``open(path, "w")`` under the current umask."""
    return 0o666 & ~current_umask()


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(final: Path) -> Path:
    """A unique temporary name next to `final` (same filesystem, so rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=str(final.parent))
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return Path(name)


def commit_file(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it over `final`, fsync the folder."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    tmp = temp_path_for(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        commit_file(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))
