"""Atomic file writes: temp name in the same folder, fsync, rename, fsync the folder.

Why: a crash (or SIGKILL) at any point must leave either the old file or the new one, never a
half-written file that a later reader could mistake for complete.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
