"""What a failed index write is called: a full disk only when it is one."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from avpipe.pipeline import index


def _message(tmp_path: Path, monkeypatch, error: str, free: int) -> str:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=free))
    return str(index._write_failure(tmp_path / "index.sqlite", sqlite3.OperationalError(error)))


def test_a_disk_io_error_with_room_to_spare_is_not_called_a_full_disk(tmp_path, monkeypatch):
    msg = _message(tmp_path, monkeypatch, "disk I/O error", 50 << 30)
    assert "full" not in msg and "the filesystem failed the write" in msg and "disk I/O error" in msg


def test_a_full_disk_is_named_whatever_sqlite_calls_it(tmp_path, monkeypatch):
    assert "the disk holding it is full" in _message(tmp_path, monkeypatch, "database or disk is full", 50 << 30)
    assert "the disk holding it is full" in _message(tmp_path, monkeypatch, "disk I/O error", 4096)
