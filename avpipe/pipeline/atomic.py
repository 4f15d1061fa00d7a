"""Atomic file writes: temp name in the same folder, fsync, rename, fsync the folder.

Every writer in avpipe goes through :func:`atomic_path` (a file written by a library that wants a
path: torch, PyAV, matplotlib, a download), :func:`atomic_write_bytes`/:func:`atomic_write_text`
(bytes in hand) or :func:`atomic_dir` (an export folder); the shard writer, whose temp file lives
across calls, uses the same two steps (:func:`temp_path_for`, :func:`commit_file`).

Why: a crash (or SIGKILL) at any point must leave either the old file or the new one, never a
half-written file that a later reader could mistake for complete.

File modes: ``tempfile.mkstemp`` creates its file 0600 whatever the umask, and the rename keeps that
mode — a lab's shared cache or run folder would then be readable by its writer only. Every temp file
is therefore set to what a plain ``open(path, "w")`` would give (``0666 & ~umask``), so ``umask 022``
gives 0644 and ``umask 002`` a group-writable cache.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path next to ``final`` for the block to write; committed over ``final`` when the
    block returns, removed when it raises, so ``final`` is the old file or the whole new one.

    A block that decides to write nothing after all removes the temp file itself; nothing is
    committed then (``final`` is left as it was). The temp name ends in ``.tmp``: a library that
    picks a format from the suffix must be told the format."""
    final = Path(final)
    tmp = temp_path_for(final)
    try:
        yield tmp
        if tmp.exists():
            commit_file(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


@contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temp folder next to ``final`` for the block to fill; it replaces ``final`` (and
    whatever was there) when the block returns and is removed when it raises.

    The folder gets the mode ``mkdir`` would give under the umask (``mkdtemp`` makes it 0700),
    for the same reason as the files above. Replacing an existing folder is two renames, not
    one: a crash in between leaves the new folder complete under its temp name and no
    ``final``; a reader never sees a half-written ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=str(final.parent)))
    try:
        tmp.chmod(0o777 & ~current_umask())
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
