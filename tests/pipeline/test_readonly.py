"""Readers write nothing and work on a cache nobody may write; writers say it is read-only.

Tests may run as root, where ``chmod a-w`` stops nothing: there the files and folders are also
made immutable (``chattr +i``, ext4 and friends) so writes really fail, and in every case the
cache is compared file by file (names, sizes, mtimes) before and after.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.store import Cache
from tests.readonly import ReadOnly, snapshot as _snapshot, tree as _tree


@pytest.fixture()
def cache(tmp_path, videos) -> Path:
    c = tmp_path / "cache"
    assert run_extract(c, videos, stages=["toy_b"], progress=False).exit_code == 0
    return c


def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_read_only_cache_is_listed_inspected_and_read(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    before = _snapshot(cache)
    with ReadOnly(_tree(cache)):
        for args in (["cache", "ls"], ["cache", "du"], ["status"], ["status", "--json"],
                     ["inspect", "a.mp4"], ["inspect", "sub dir/a.mp4", "--json"]):
            r = _cli(*args, "--cache", cache)
            assert r.exit_code == 0, (args, r.output)
            assert "Traceback" not in r.output
        with Cache(cache) as c:
            e = c.read("toy_b", "a.mp4")
            assert e.data.shape == (10, 1) and np.isfinite(e.timestamps).all()
            assert c.read("toy_a", "b.mp4", config={"scale": 1.0}).data.shape == (15, 2)
        from avpipe.fusion.source import CacheSource, StageRef

        src = CacheSource(cache)  # the trainer's read path
        fp = src.resolve(StageRef("toy_b"), ["a.mp4", "b.mp4"])
        assert src.load("toy_b", fp, "b.mp4").data.shape == (15, 1)
    assert _snapshot(cache) == before
    assert not (tmp_path / "home").exists()  # no weights converted, no checksum memo written


def test_write_commands_on_read_only_cache_say_so(cache, videos):
    before = _snapshot(cache)
    with ReadOnly(_tree(cache)):
        for args in (["cache", "gc"], ["cache", "verify"],
                     ["extract", "--videos", videos, "--stages", "toy_b", "--no-progress"]):
            r = _cli(*args, "--cache", cache)
            assert r.exit_code == 1, (args, r.output)
            assert "read-only" in r.output and "Traceback" not in r.output
    assert _snapshot(cache) == before


def test_read_only_index_file_reads_work_writes_say_so(cache, videos):
    idx = cache / "index.sqlite"
    with ReadOnly([idx]):
        assert _cli("cache", "ls", "--cache", cache).exit_code == 0
        assert _cli("status", "--cache", cache).exit_code == 0
        r = _cli("cache", "gc", "--cache", cache)
        assert r.exit_code == 1 and "read-only" in r.output and "Traceback" not in r.output, r.output
        r = _cli("extract", "--videos", videos, "--cache", cache, "--stages", "toy_b", "--no-progress")
        assert r.exit_code == 1 and "read-only" in r.output and "Traceback" not in r.output, r.output


def test_status_and_inspect_write_nothing(cache, monkeypatch, tmp_path):
    """``status`` used to convert (and write) the 75 MB Whisper checkpoint to fingerprint asr."""
    home = tmp_path / "home"
    monkeypatch.setenv("AVPIPE_HOME", str(home))
    index_before = {k: v for k, v in _snapshot(cache).items() if not k.startswith(("index.sqlite-", "."))}
    assert _cli("status", "--cache", cache).exit_code == 0  # every stage, asr included
    assert _cli("inspect", "a.mp4", "--cache", cache).exit_code == 0
    after = {k: v for k, v in _snapshot(cache).items() if not k.startswith(("index.sqlite-", "."))}
    assert after == index_before  # SQLite's own -wal/-shm bookkeeping aside
    assert not home.exists() or not any(p.is_file() for p in home.rglob("*"))


def test_bad_stages_creates_nothing(tmp_path, videos, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _cli("extract", "--videos", videos, "--stages", "bogus")
    assert r.exit_code == 2 and "unknown stage 'bogus'" in r.output
    assert not (tmp_path / "cache").exists()


def test_inspect_with_deleted_shard_is_one_message(cache):
    with Cache(cache) as c:
        victim = c.root / c.list("toy_a")[0].shard
        cid = c.list("toy_a")[0].content_id
    victim.unlink()
    r = _cli("inspect", cid, "--cache", cache)
    assert r.exit_code == 1, r.output
    assert "missing from disk" in r.output and "avpipe cache verify" in r.output
    assert "Traceback" not in r.output and not isinstance(r.exception, FileNotFoundError)


def test_status_survives_wal_deleted_under_a_running_writer(cache):
    from avpipe.pipeline.index import Index

    writer = Index(cache / "index.sqlite")  # an extract holding the index open
    try:
        writer.upsert_files([("/x.mp4", "x.mp4", 1, 2, 3, "ab" * 20)])
        for suffix in ("-wal", "-shm"):
            Path(f"{cache / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
        r = _cli("status", "--cache", cache)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert "toy_b" in r.output
        with Cache(cache) as c:
            assert c.read("toy_b", "a.mp4").data.shape == (10, 1)
    finally:
        writer.close()


def test_index_that_is_not_a_database_is_one_line_everywhere(tmp_path):
    (tmp_path / "index.sqlite").write_bytes(b"not a database at all " * 100)
    for args in (["cache", "ls"], ["cache", "du"], ["status"], ["inspect", "a.mp4"],
                 ["cache", "gc"], ["cache", "verify"]):
        r = _cli(*args, "--cache", tmp_path)
        assert r.exit_code == 1, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "index.sqlite" in lines[0] and "not a database" in lines[0], (args, r.output)


def test_read_only_cache_left_by_a_killed_writer_shows_its_commits(tmp_path):
    """A writer killed before its WAL was folded into the main file, then the cache made
    read-only: readers still see every commit (the WAL is read, not ignored)."""
    import subprocess
    import sys

    code = ("import os; from avpipe.pipeline.index import Index;"
            f"w = Index({str(tmp_path / 'index.sqlite')!r}); w.upsert_files([('/a.mp4', 'a.mp4', 1, 2, 3, 'ab' * 20)]);"
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert (tmp_path / "index.sqlite-wal").stat().st_size > 0
    with ReadOnly(_tree(tmp_path)):
        with Cache(tmp_path) as c:
            assert c.videos() == [("a.mp4", "ab" * 20)]
