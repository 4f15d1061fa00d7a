"""A lab's shared cache: files avpipe creates honour the umask, so another user can read them.

``tempfile.mkstemp`` (behind every atomic write) creates files 0600 whatever the umask; before the
fix every shard of a cache written under ``umask 022`` failed to open for anyone but its writer.
The second-user tests fork, drop to uid/gid 65534 ("nobody") and read or write as that user; they
need root to do so and are skipped otherwise.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.atomic import atomic_write_text, current_umask, file_mode
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.store import Cache

NOBODY = 65534


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A folder any user may enter (pytest's tmp_path is 0700 for its owner)."""
    d = Path(tempfile.mkdtemp(prefix="avpipe-shared-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def _as_other_user(fn: Callable[[], None], *, gid: int = NOBODY, groups: tuple[int, ...] = ()) -> str:
    """Run ``fn`` in a forked child as uid 65534; return '' on success, else the error text."""
    if os.geteuid() != 0:
        pytest.skip("switching to a second user needs root")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        msg = ""
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(NOBODY)
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            msg = f"{type(e).__name__}: {e}" or "failed"
        os.write(w, msg.encode()[:60000])
        os.close(w)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    return out


def _files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")]


def test_atomic_writes_take_the_umask_mode(tmp_path, umask):
    for m, want in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        umask(m)
        assert current_umask() == m and file_mode() == want
        p = tmp_path / f"f{m:o}.txt"
        atomic_write_text(p, "x")
        assert stat.S_IMODE(p.stat().st_mode) == want, oct(p.stat().st_mode)


def test_cache_written_by_one_user_is_read_by_another(shared_dir, videos, umask):
    umask(0o022)
    cache = shared_dir / "cache"
    assert run_extract(cache, videos, stages=["toy_b"], progress=False).exit_code == 0
    shards = [p for p in _files(cache) if p.suffix == ".h5"]
    assert shards
    for p in _files(cache):
        assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, (p, oct(p.stat().st_mode))
    with Cache(cache) as c:
        want = {k: c.read("toy_b", k).data.copy() for k in ("a.mp4", "sub dir/é video.mp4")}

    def read() -> None:
        with Cache(cache) as c:
            for k, arr in want.items():
                got = c.read("toy_b", k).data
                if not np.array_equal(got, arr):
                    raise AssertionError(f"{k}: other content")
        import h5py

        for p in shards:
            with h5py.File(p, "r") as h5:
                list(h5.keys())

    err = _as_other_user(read)
    assert err == "", err


def test_group_writable_cache_works_for_the_group(shared_dir, videos, umask):
    """``umask 002`` + a setgid folder owned by the lab's group: a member adds to root's cache."""
    umask(0o002)
    group = 4242
    vids = shutil.copytree(videos, shared_dir / "videos")  # the member must read the videos too
    for p in [vids, *vids.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    cache = shared_dir / "cache"
    cache.mkdir()
    os.chown(cache, 0, group)
    cache.chmod(0o2775)  # setgid: everything below gets the folder's group
    assert run_extract(cache, vids, stages=["toy_a"], progress=False).exit_code == 0
    for p in _files(cache):
        st = p.stat()
        assert stat.S_IMODE(st.st_mode) & 0o060 == 0o060, (p, oct(st.st_mode))
        assert st.st_gid == group, p

    def extend() -> None:
        os.umask(0o002)
        s = run_extract(cache, vids, stages=["toy_b"], progress=False)
        if s.exit_code != 0:
            raise RuntimeError(f"extract exit {s.exit_code}")

    err = _as_other_user(extend, gid=group, groups=(group,))
    assert err == "", err
    with Cache(cache) as c:
        assert c.read("toy_b", "a.mp4").data.shape[0] > 0


def test_every_atomic_writer_takes_the_umask_mode_and_leaves_nothing_half_written(tmp_path, umask):
    """atomic_path (files a library writes by path) and atomic_dir (export folders) commit with
    the umask's mode, and a failure leaves the old content and no temp file behind."""
    from avpipe.pipeline.atomic import atomic_dir, atomic_path

    umask(0o002)
    f = tmp_path / "model.pt"
    with atomic_path(f) as tmp:
        tmp.write_bytes(b"new")
        assert not f.exists()  # nothing visible under the final name before the block returns
    assert f.read_bytes() == b"new" and stat.S_IMODE(f.stat().st_mode) == 0o664
    with pytest.raises(RuntimeError), atomic_path(f) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert f.read_bytes() == b"new"
    with atomic_path(tmp_path / "none.mp4") as tmp:
        tmp.unlink()  # the writer decided there is nothing to write
    assert not (tmp_path / "none.mp4").exists()

    d = tmp_path / "export"
    for content in ("one", "two"):
        with atomic_dir(d) as tmp:
            (tmp / "a.txt").write_text(content)
    assert (d / "a.txt").read_text() == "two" and stat.S_IMODE(d.stat().st_mode) == 0o775
    with pytest.raises(RuntimeError), atomic_dir(d) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("no track could be read")
    assert (d / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "model.pt"]
