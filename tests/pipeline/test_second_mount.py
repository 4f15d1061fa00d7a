"""One cache seen through two mount points (a bind mount of the same folder).

What a lab's shared cache looks like from two places: a second process reaches the same files
by another path. ``flock`` and SQLite's locks are per inode, so the cache lock must serialise two
extractions through different paths, the index must stay consistent, readers through the second
path must never write, and the filesystem-type detection must read the bind mount's own entry
in mountinfo. Needs permission to mount (root); skipped with the reason otherwise."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avpipe.pipeline.maintenance import verify
from avpipe.pipeline.netfs import JOURNAL_ENV, filesystem_type, index_journal_mode, parse_mountinfo
from avpipe.pipeline.store import Cache
from tests.pipeline.subproc import toy_env


@pytest.fixture()
def two_mounts() -> Iterator[tuple[Path, Path]]:
    """(A, B): B is a bind mount of A. B's name has a space (mountinfo escapes it as ``\\040``)."""
    top = Path(tempfile.mkdtemp(prefix="avpipe-mounts-"))
    a, b = top / "a", top / "mount b"
    a.mkdir()
    b.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        shutil.rmtree(top)
        pytest.skip("no mount command on this machine")
    r = subprocess.run([mount, "--bind", str(a), str(b)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(top)
        pytest.skip(f"bind mounts are not permitted here: {(r.stderr or r.stdout).strip()}")
    try:
        yield a, b
    finally:
        if subprocess.run(["umount", str(b)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(b)], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def test_the_bind_mount_is_its_own_mountinfo_entry(two_mounts):
    a, b = two_mounts
    mounts = dict(parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    assert str(b) in mounts  # found under its real name, space unescaped
    assert filesystem_type(b / "cache") == mounts[str(b)] == filesystem_type(a / "cache")
    assert index_journal_mode(b) == index_journal_mode(a)


def _extract(cache: Path, videos: Path, log: Path, journal: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache",
                             str(cache), "--stages", "toy_slow", "--no-progress"],
                            env=toy_env(AVPIPE_TOY_SLEEP="0.3", AVPIPE_TOY_LOG=str(log), **{JOURNAL_ENV: journal}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, mtime and content digest."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                        hashlib.blake2b(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("journal", ["wal", "delete"])  # delete: the rollback journal used on NFS
def test_two_extractions_through_two_mounts_serialise_and_readers_never_write(two_mounts, videos, tmp_path,
                                                                             journal, monkeypatch):
    a, b = two_mounts
    monkeypatch.setenv(JOURNAL_ENV, journal)  # this process opens the index too
    log = tmp_path / "toy.log"
    first = _extract(a / "cache", videos, log, journal)
    deadline = time.monotonic() + 60
    lock = a / "cache" / ".lock"
    while "extract" not in (lock.read_text() if lock.exists() else ""):
        assert time.monotonic() < deadline and first.poll() is None, "the first extract never took the lock"
        time.sleep(0.05)
    second = _extract(b / "cache", videos, log, journal)  # the same cache, through the other mount
    out1, err1 = first.communicate(timeout=180)
    out2, err2 = second.communicate(timeout=180)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    # the second waited for the first (whose holder line names host and pid), then found the work done
    assert "is locked by pid" in err2 and f"pid {first.pid} on" in err2, err2
    computed = [ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("toy_slow")]
    assert len(computed) == 4 == len(set(computed))  # each video computed exactly once
    with Cache(b / "cache", create=True) as c:  # consistent whichever path opens it
        assert c.index.db.execute("PRAGMA journal_mode").fetchone()[0].upper() == journal.upper()
        assert verify(c).ok
    before = _tree(a / "cache")
    # readers through the second mount: the CLI's status and every entry read from Python
    st = subprocess.run([sys.executable, "-m", "avpipe", "status", "--cache", str(b / "cache"), "--videos",
                         str(videos), "--stages", "toy_slow"], env=toy_env(**{JOURNAL_ENV: journal}),
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stdout + st.stderr
    with Cache(b / "cache") as c:
        entries = c.list("toy_slow")
        assert len(entries) == 4
        for e in entries:
            assert c.read("toy_slow", e.content_id).data.shape[0] > 0
    after = _tree(a / "cache")
    if journal == "wal":  # SQLite's WAL readers need its shared-memory file; the index is untouched
        made = {k: after.pop(k) for k in ("index.sqlite-shm", "index.sqlite-wal") if k not in before and k in after}
        assert made.get("index.sqlite-wal", (0,))[0] == 0, made
    assert after == before  # nothing written, created or touched by the readers
