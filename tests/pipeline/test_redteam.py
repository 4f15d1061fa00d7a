"""Red-team replays (issue 19): each case an attack that once poisoned or lost cache contents.

Every test builds its own files; none needs root, a mount or a GPU. A case that can only be
shown on a second filesystem is simulated through the stat facts it depends on.
"""
from __future__ import annotations

import os
import shutil

import pytest

from avpipe.pipeline import discover as disc
from avpipe.pipeline.discover import FoundFile, content_hash, identify, iter_video_files
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.stage import get_stage_class
from avpipe.pipeline.store import Cache


def _run(cache, videos, **kw):
    kw.setdefault("stages", ["toy_a"])
    kw.setdefault("progress", False)
    return run_extract(cache, videos, **kw)


# -- 1. content identity ------------------------------------------------------------------------
def test_memo_is_keyed_by_device_two_mounts_same_inode(tmp_path, clip_bank):
    """Two different files with equal size, inode, mtime and ctime on two filesystems must not
    share a content id: the second one is hashed."""
    shutil.copy(clip_bank / "c0.mp4", tmp_path / "a.mp4")
    shutil.copy(clip_bank / "c1.mp4", tmp_path / "b.mp4")
    a = next(iter_video_files(tmp_path / "a.mp4"))
    memo = {a.memo_key: content_hash(a.path)}
    twin = FoundFile("b.mp4", tmp_path / "b.mp4", a.size, a.mtime_ns, a.inode, a.dev + 1, a.ctime_ns)
    (v,) = identify([twin], memo)
    assert v.hashed and v.content_id == content_hash(tmp_path / "b.mp4")


def test_memo_misses_when_mtime_is_set_back(tmp_path, clip_bank):
    """Rewriting a file and restoring its mtime (``touch -d``) changes ctime: hashed again."""
    p = tmp_path / "a.mp4"
    shutil.copy(clip_bank / "c0.mp4", p)
    before = next(iter_video_files(p))
    memo = {before.memo_key: content_hash(p)}
    st = p.stat()
    data = p.read_bytes()
    p.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, new bytes
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = next(iter_video_files(p))
    (v,) = identify([after], memo)
    assert v.hashed and v.content_id == content_hash(p) != memo[before.memo_key]


def test_file_changing_while_hashed_is_hashed_again(tmp_path, clip_bank, monkeypatch):
    p = tmp_path / "a.mp4"
    shutil.copy(clip_bank / "c0.mp4", p)
    f = next(iter_video_files(p))
    real = disc.content_hash
    calls = []

    def hash_then_swap(path):
        h = real(path)
        if not calls:  # the first read sees the old bytes, then the file is replaced
            shutil.copy(clip_bank / "c1.mp4", tmp_path / "new.mp4")
            os.replace(tmp_path / "new.mp4", p)
        calls.append(h)
        return h

    monkeypatch.setattr(disc, "content_hash", hash_then_swap)
    (v,) = identify([f], {})
    assert len(calls) == 2 and v.content_id == real(clip_bank / "c1.mp4")
    assert v.identity == disc.stat_identity(p.stat())


def test_video_replaced_between_hash_and_decode_is_not_cached(tmp_path, clip_bank, monkeypatch, toy_log):
    """The file is swapped after discovery hashed it and before probe decodes it: nothing is
    stored under the old bytes' id, the video fails for this run (transient, with a message) and
    a pristine copy of the original later gets its own, correct features."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(clip_bank / "c0.mp4", videos / "a.mp4")  # 10 frames
    shutil.copy(clip_bank / "c2.mp4", videos / "b.mp4")
    probe = get_stage_class("probe")
    real = probe.compute
    swapped = []

    def swap_then_compute(self, video, inputs):
        if video.key == "a.mp4" and not swapped:
            shutil.copy(clip_bank / "c1.mp4", videos / ".new")  # 15 frames
            os.replace(videos / ".new", videos / "a.mp4")
            swapped.append(video.content_id)
        return real(self, video, inputs)

    monkeypatch.setattr(probe, "compute", swap_then_compute)
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s.exit_code == 1
    assert len(s.failures) == 1, s.render()
    (f,) = s.failures
    assert f.error_type == "SourceChanged" and f.transient and f.key == "a.mp4"
    assert "changed while it was processed" in f.message and "discarded" in f.message
    assert "FAILED probe a.mp4: SourceChanged" in s.render()
    old_cid = swapped[0]
    with Cache(tmp_path / "cache") as c:
        assert c.index.entry(c.resolve("probe"), old_cid) is None
        assert old_cid not in c.index.failed(c.resolve("probe"))  # transient: retried next run
    monkeypatch.setattr(probe, "compute", real)
    # next run: the new bytes get their own id; a pristine copy of the original gets its own rows
    shutil.copy(clip_bank / "c0.mp4", videos / "pristine.mp4")
    s2 = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s2.exit_code == 0, s2.render()
    with Cache(tmp_path / "cache") as c:
        assert len(c.read("probe", "pristine.mp4").data) == 10
        assert len(c.read("probe", "a.mp4").data) == 15


# -- 2. the index and the lock cannot be turned into data loss -----------------------------------
def _cli(*args):
    from click.testing import CliRunner

    from avpipe.cli import main

    return CliRunner().invoke(main, list(args))


def _entries(cache):
    with Cache(cache) as c:
        return sorted((e.stage, e.content_id, e.shard, e.n_rows) for e in c.list())


def test_truncated_index_verify_and_gc_refuse_then_rebuild_recovers(tmp_path, videos):
    cache = tmp_path / "cache"
    assert _run(cache, videos, stages=["toy_b"]).exit_code == 0
    before = _entries(cache)
    shards = sorted(p for p in (cache / "shards").rglob("*.h5"))
    assert len(shards) >= 3
    past = os.path.getmtime(cache / "index.sqlite") - 60  # shards written a minute before the wipe
    for p in shards:
        os.utime(p, (past, past))
    for suffix in ("-wal", "-shm"):
        (cache / f"index.sqlite{suffix}").unlink(missing_ok=True)
    os.truncate(cache / "index.sqlite", 0)  # truncate -s 0 cache/index.sqlite

    for args in (["cache", "gc", "--dry-run"], ["cache", "verify"], ["cache", "gc"]):
        r = _cli(*args, "--cache", str(cache))
        assert r.exit_code == 1, (args, r.output)
        assert "rebuild-index" in r.output and "all good" not in r.output, r.output
        assert "no avpipe tables" in r.output or "younger than" in r.output, r.output
        assert sorted(p for p in (cache / "shards").rglob("*.h5")) == shards  # nothing deleted

    r = _cli("cache", "rebuild-index", "--cache", str(cache))
    assert r.exit_code == 0, r.output
    assert f"{len(before)} entries" in r.output and "moved aside" in r.output
    assert _entries(cache) == [(s, c, sh, n) for s, c, sh, n in before]
    r = _cli("cache", "verify", "--cache", str(cache))
    assert r.exit_code == 0 and "all good" in r.output, r.output
    r = _cli("cache", "gc", "--cache", str(cache))
    assert r.exit_code == 0 and r.output.startswith("0 files"), r.output
    # the next extract finds everything done (names come back by discovery)
    s = _run(cache, videos, stages=["toy_b"])
    assert s.exit_code == 0 and all(st.computed == 0 for st in s.stages), s.render()


def test_rebuild_index_skips_a_shard_that_lies_about_its_place(tmp_path, videos):
    cache = tmp_path / "cache"
    assert _run(cache, videos).exit_code == 0
    shard = next((cache / "shards" / "toy_a").rglob("*.h5"))
    fake = next((cache / "shards" / "probe").iterdir()) / ("f" * 32 + ".h5")
    shutil.copy(shard, fake)  # toy_a's groups in probe's folder
    r = _cli("cache", "rebuild-index", "--cache", str(cache))
    assert r.exit_code == 1 and "SKIPPED" in r.output and "not the folder it lies in" in r.output, r.output
    with Cache(cache) as c:
        assert not any(e.shard.endswith(fake.name) for e in c.list())


def _drop_index_keep_old_shards(cache) -> None:
    """Delete the index; the shards stay, dated well before any index could be (a wiped index)."""
    for p in (cache / "shards").rglob("*.h5"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    for p in cache.glob("index.sqlite*"):
        p.unlink()


def test_index_replaced_by_a_fresh_one_is_refused(tmp_path, videos):
    cache = tmp_path / "cache"
    assert _run(cache, videos).exit_code == 0
    _drop_index_keep_old_shards(cache)
    Cache(cache, create=True).close()  # a fresh, empty index beside old shards
    from avpipe.pipeline.maintenance import IndexUnsafe, gc, verify

    with Cache(cache) as c:
        with pytest.raises(IndexUnsafe, match="younger than"):
            gc(c)
        with pytest.raises(IndexUnsafe, match="younger than"):
            verify(c)
    assert list((cache / "shards").rglob("*.h5"))


def test_deleted_lock_file_does_not_let_gc_in(tmp_path):
    """The folder flock survives ``rm .lock``: a second writer still waits."""
    import subprocess
    import sys
    import time

    from avpipe.pipeline.lock import CacheLock
    from tests.pipeline.subproc import toy_env

    Cache(tmp_path, create=True).close()
    with CacheLock(tmp_path, purpose="extract"):
        (tmp_path / ".lock").unlink()
        code = ("import sys, time; from avpipe.pipeline.lock import CacheLock\n"
                "t = time.time()\n"
                "with CacheLock(sys.argv[1], purpose='gc'): print(time.time() - t)")
        p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=toy_env())
        time.sleep(1.5)
        assert p.poll() is None, p.communicate()  # still waiting for the folder lock
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and float(out) >= 1.0, err
    assert "held by another process" in err


def test_gc_keeps_a_temp_file_a_live_writer_holds(tmp_path, videos):
    from avpipe.pipeline.lock import hold_file, release_file
    from avpipe.pipeline.maintenance import gc

    cache = tmp_path / "cache"
    assert _run(cache, videos).exit_code == 0
    d = next((cache / "shards" / "toy_a").iterdir())
    live, dead = d / ".live.h5.x.tmp", d / ".dead.h5.y.tmp"
    live.write_bytes(b"being written")
    dead.write_bytes(b"left by a killed worker")
    fd = hold_file(live)
    try:
        with Cache(cache) as c:
            rep = gc(c)
        assert live.exists() and not dead.exists()
        assert [p.split("/")[-1] for p in rep.kept_live] == [live.name]
    finally:
        release_file(fd)
    with Cache(cache) as c:
        gc(c)
    assert not live.exists()


# -- 3. faults are classified honestly ----------------------------------------------------------
def _fail_writes(monkeypatch, exc, after=0):
    """Make the shard writer's HDF5 writes fail (after ``after`` successful videos)."""
    import avpipe.pipeline.shard as shard_mod

    real = shard_mod.write_result
    n = [0]

    def write(h5, cid, res, prov):
        n[0] += 1
        if n[0] > after:
            raise exc
        return real(h5, cid, res, prov)

    monkeypatch.setattr(shard_mod, "write_result", write)


def test_disk_full_is_transient_one_line_and_retried(tmp_path, videos, monkeypatch):
    import errno

    cache = tmp_path / "cache"
    _fail_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), after=1)
    s = _run(cache, videos, stages=["probe"])
    text = s.render()
    assert s.exit_code == 1
    assert text.count("DISK FULL") == 1 and "FAILED" not in text, text
    assert all(f.error_type == "DiskFull" and f.transient for f in s.failures)
    assert len({f.content_id for f in s.failures}) == len(s.failures)  # one per (stage, video)
    monkeypatch.undo()
    s2 = _run(cache, videos, stages=["probe"])
    assert s2.exit_code == 0 and "not retried" not in s2.render(), s2.render()
    assert s2.stages[0].cached + s2.stages[0].computed == 4


def test_hdf5_error_on_a_nearly_full_disk_is_disk_full(tmp_path, videos, monkeypatch):
    """HDF5 hides ENOSPC behind words like "Can't destroy cache": with the disk nearly full that
    is a full disk, not a property of the video."""
    import avpipe.pipeline.faults as faults

    monkeypatch.setattr(faults, "free_mb", lambda path: 3.0)
    _fail_writes(monkeypatch, RuntimeError("Can't destroy cache (slist already enabled?)"))
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s.failures and all(f.error_type == "DiskFull" and f.transient for f in s.failures)
    with Cache(tmp_path / "cache") as c:
        assert c.index.failed(c.resolve("probe")) == set()  # nothing recorded as permanent


def test_cache_folder_vanishing_at_commit_is_transient(tmp_path, videos, monkeypatch):
    """What a gc behind a deleted lock did: the shard folder is gone when the worker renames."""
    import avpipe.pipeline.shard_writer as sw

    def gone(tmp, final):
        raise FileNotFoundError(2, "No such file or directory", str(final))

    monkeypatch.setattr(sw, "commit_file", gone)
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    assert len(s.failures) == 4 and all(f.error_type == "CacheWriteFailed" and f.transient
                                        for f in s.failures), s.render()
    monkeypatch.undo()
    assert _run(tmp_path / "cache", videos, stages=["probe"]).exit_code == 0


def test_a_stage_returning_unstorable_data_stays_the_videos_failure(tmp_path, videos, monkeypatch):
    _fail_writes(monkeypatch, TypeError("Object dtype dtype('O') has no native HDF5 equivalent"))
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s.failures and all(f.error_type == "TypeError" and not f.transient for f in s.failures)


def test_a_task_retried_after_a_worker_death_prints_one_failed_line(tmp_path, videos):
    from avpipe.pipeline.index import FailureRecord
    from avpipe.pipeline.plan import make_plan
    from avpipe.pipeline.runner import RunSummary, StageSummary, _RunState, _StageCommitter, _NoBar

    with Cache(tmp_path / "cache", create=True) as c:
        plan = make_plan(c, videos, stages=["probe"])
        summary = RunSummary([], 4, 4, 4, 0.0)
        state = _RunState(c, plan, summary)
        ss = StageSummary("probe", plan.stages["probe"].fingerprint.value)
        summary.stages.append(ss)
        com = _StageCommitter(state, "probe", ss, _NoBar())
        v = plan.videos[0]
        fp = ss.fingerprint
        for msg in ("worker process died: killed by SIGKILL", "worker process died again"):
            com.failures([FailureRecord("probe", fp, v.content_id, v.key, "WorkerDied", msg, "", 0.0, True)])
        assert ss.failed == 1 and len(summary.failures) == 1
        assert summary.render().count("FAILED probe") == 1 and "died again" in summary.render()


# -- 5. every config value bounded where it is parsed --------------------------------------------
@pytest.mark.parametrize("toml,words", [
    ("n_mels = 1e12", "n_mels = 1000000000000.0: must be <= 1024"),
    ("window_s = inf", "window_s = inf: must be a finite number"),
    ("fmin = nan", "fmin = nan"),
    ("n_fft = 9223372036854775807", "n_fft"),
])
def test_stage_options_refused_with_exit_2_before_any_work(tmp_path, videos, toml, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[stages.logmel]\n{toml}\n")
    r = _cli("extract", "--videos", str(videos), "--cache", str(tmp_path / "cache"), "--config", str(cfg))
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
    assert not (tmp_path / "cache").exists()  # nothing created, nothing recorded as a failure


def test_inf_still_means_no_limit_where_documented():
    from avpipe.extractors.text import TextConfig
    from avpipe.pipeline.config_schema import ConfigError

    assert TextConfig(max_word_s=float("inf")).max_word_s == float("inf")
    with pytest.raises(ConfigError, match="not nan"):
        TextConfig(max_word_s=float("nan"))


# -- 4. one bad input fails one item -------------------------------------------------------------
def test_unicode_twins_are_reported_as_a_collision_naming_both(tmp_path, clip_bank):
    videos = tmp_path / "videos"
    videos.mkdir()
    nfc, nfd = "caf\u00e9.mp4", "cafe\u0301.mp4"
    shutil.copy(clip_bank / "c0.mp4", videos / nfc)
    shutil.copy(clip_bank / "c1.mp4", videos / nfd)
    if len(os.listdir(videos)) != 2:
        pytest.skip("this filesystem normalises names itself (one file)")
    r = _cli("extract", "--videos", str(videos), "--cache", str(tmp_path / "cache"), "--stages", "probe",
             "--no-progress")
    assert r.exit_code == 1, r.output
    assert "name collision" in r.output and ascii(nfc) in r.output and ascii(nfd) in r.output, r.output
    assert "1 files" in r.output  # the first one was processed


def test_non_utf8_file_name_does_not_abort_the_batch(tmp_path, clip_bank):
    videos = tmp_path / "videos"
    videos.mkdir()
    bad = os.path.join(os.fsencode(videos), b"caf\xe9-latin1.mp4")
    try:
        shutil.copy(clip_bank / "c0.mp4", bad)
    except (OSError, UnicodeError):
        pytest.skip("this filesystem refuses non-UTF-8 names")
    shutil.copy(clip_bank / "c1.mp4", videos / "good.mp4")
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s.n_files == 2
    with Cache(tmp_path / "cache") as c:
        keys = sorted(k for k, _ in c.videos())
        assert "good.mp4" in keys and "caf\\xe9-latin1.mp4" in keys
        assert len(c.read("probe", "good.mp4").data) == 15
    r = _cli("status", "--cache", str(tmp_path / "cache"))
    assert r.exit_code in (0, 1) and "Traceback" not in r.output and "unexpected" not in r.output, r.output


# -- 3b. a real full disk (needs root to mount a small filesystem; skips without) ----------------
@pytest.fixture()
def full_shards_disk(tmp_path):
    """A cache whose ``shards/`` is a tiny filesystem, filled up; the index lives elsewhere (so
    the failures can be recorded, and must be recorded as transient)."""
    import subprocess

    cache = tmp_path / "cache"
    Cache(cache, create=True).close()
    mnt = cache / "shards"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small filesystem here (needs root): " + r.stderr.decode(errors="replace"))
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\1" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        yield cache, filler
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_real_disk_full_never_crashes_and_is_retried(full_shards_disk, videos, jobs):
    import subprocess
    import sys

    from tests.pipeline.subproc import toy_env

    cache, filler = full_shards_disk
    cmd = [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
           "--stages", "toy_b", "--no-progress", "--jobs", jobs]
    r = subprocess.run(cmd, env=toy_env(), capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out  # not a segfault (-11/139), not a traceback
    assert "free(): invalid pointer" not in out and "Traceback" not in out, out
    assert r.stdout.count("DISK FULL") == 1 and "FAILED" not in r.stdout, out
    with Cache(cache) as c:
        fails = c.failures()
        assert len(fails) == 4 and all(f.transient and f.error_type == "DiskFull" for f in fails)
    filler.unlink()
    r = subprocess.run(cmd, env=toy_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "not retried" not in r.stdout, r.stdout + r.stderr
    with Cache(cache) as c:
        assert len(c.list("toy_b")) == 4


def test_permission_denied_is_not_called_a_truncated_video(tmp_path, videos, monkeypatch):
    import av

    real = av.open

    def deny(path, *a, **k):
        if str(path).endswith("b.mp4"):
            raise av.error.PermissionError(13, "Permission denied")
        return real(path, *a, **k)

    monkeypatch.setattr(av, "open", deny)
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    (f,) = s.failures
    assert f.key == "b.mp4" and "permission denied" in f.message and "truncated" not in f.message
    assert s.stages[0].computed == 3  # the others are fine


def test_extract_on_a_wiped_index_warns_and_points_to_rebuild(tmp_path, videos):
    cache = tmp_path / "cache"
    assert _run(cache, videos).exit_code == 0
    _drop_index_keep_old_shards(cache)
    said = []
    s = _run(cache, videos, say=said.append)
    assert s.exit_code == 0
    assert any("younger than" in m and "rebuild-index" in m for m in said), said
    said.clear()
    _run(cache, videos, say=said.append)
    assert not said  # a populated index is not checked again
