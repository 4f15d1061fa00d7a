"""One lock discipline: every change to a cache holds the lock, from the CLI and from Python."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from avpipe.pipeline.lock import CacheLock, CacheLockError
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import CacheReadOnly
from tests.pipeline.subproc import toy_env as _env


_GC = """
import sys, time
from avpipe.pipeline.maintenance import gc
from avpipe.pipeline.store import Cache
with Cache(sys.argv[1]) as c:
    rep = gc(c)
print(time.time(), len(rep.files), flush=True)
"""


def test_python_gc_waits_for_a_running_extract_and_keeps_its_shards(tmp_path, videos):
    cache = tmp_path / "cache"
    Cache(cache, create=True).close()
    extract = subprocess.Popen(
        [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
         "--stages", "toy_slow", "--no-progress"],
        env=_env(AVPIPE_TOY_SLEEP="0.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while "extract" not in ((cache / ".lock").read_text() if (cache / ".lock").exists() else ""):
        assert time.time() < deadline and extract.poll() is None, "extract never took the lock"
        time.sleep(0.05)
    gc = subprocess.run([sys.executable, "-c", _GC, str(cache)], env=_env(), capture_output=True,
                        text=True, timeout=120)
    out, err = extract.communicate(timeout=120)
    ended = time.time()
    assert extract.returncode == 0, out + err
    assert gc.returncode == 0, gc.stderr
    assert "locked by pid" in gc.stderr and "waiting" in gc.stderr  # it waited for the extract
    gc_done, n_deleted = gc.stdout.split()
    assert float(gc_done) <= ended and int(n_deleted) == 0
    with Cache(cache) as c:
        entries = c.list("toy_slow")
        assert len(entries) == 4
        for e in entries:  # every committed shard is still there and readable
            assert c.read("toy_slow", e.content_id).data.shape[1] == 1
    from avpipe.pipeline.maintenance import verify

    with Cache(cache) as c:
        assert verify(c).ok


def test_lock_is_reentrant_within_a_process(tmp_path):
    """gc called by code that already holds the lock (e.g. a maintenance script) must not hang."""
    from avpipe.pipeline.maintenance import gc

    Cache(tmp_path, create=True).close()
    with CacheLock(tmp_path, purpose="script"), Cache(tmp_path) as c:
        assert gc(c).files == []
    assert (tmp_path / ".lock").read_text() == ""  # released, holder cleared


def test_lock_file_on_full_disk_is_one_line(tmp_path, videos, monkeypatch):
    from filelock import FileLock

    from avpipe.cli import main

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache" / ".lock"))

    monkeypatch.setattr(FileLock, "acquire", full)
    with pytest.raises(CacheLockError, match=r"no space left on device for the cache lock file .*\.lock"):
        CacheLock(tmp_path / "cache").acquire()
    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(tmp_path / "cache"),
                                  "--stages", "toy_a", "--no-progress"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path / "cache" / ".lock") in lines[0], r.output


def test_lock_on_read_only_cache_says_so(tmp_path, monkeypatch):
    from filelock import FileLock

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".lock"))

    monkeypatch.setattr(FileLock, "acquire", denied)
    with pytest.raises(CacheReadOnly, match="is read-only"):
        CacheLock(tmp_path).acquire()


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (root with mount rights only; skipped elsewhere)."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


def _fill(disk: Path) -> None:
    fd = os.open(disk / "fill", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("existing", [False, True], ids=["new-cache", "new-config"])
def test_extract_on_a_full_disk_is_one_line(tiny_disk, videos, tmp_path, existing):
    from avpipe.cli import main

    cache = tiny_disk / "cache"
    if existing:
        r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(cache),
                                      "--stages", "toy_a", "--no-progress"])
        assert r.exit_code == 0, r.output
    _fill(tiny_disk)
    (tmp_path / "scaled.toml").write_text("[stages.toy_a]\nscale = 3.0\n")
    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(cache),
                                  "--stages", "toy_a", "--no-progress", "--config", str(tmp_path / "scaled.toml")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert str(cache) in lines[0] and "full" in lines[0], r.output
