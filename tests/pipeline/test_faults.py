"""Faults stay small: a dead worker costs at most the video that kills it, workers die with the
driver, a full disk is named as such, and machine faults are retried by the next run."""
from __future__ import annotations

import errno
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avpipe.pipeline.faults import is_disk_full, worker_death_cause
from avpipe.pipeline.index import Index
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.store import Cache
from tests.media import make_clip
from tests.pipeline.subproc import toy_env as _env


def _extract(videos: Path, cache: Path, stages: str = "toy_b", *extra: str) -> list[str]:
    return [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
            "--stages", stages, "--no-progress", "--jobs", "2", *extra]


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    v = tmp_path_factory.mktemp("six")
    for i in range(6):
        make_clip(v / f"v{i}.mp4", seed=30 + i, seconds=0.5)
    return v


def _done(cache: Path, stage: str) -> set[str]:
    with Cache(cache) as c:
        return {k for e in c.list(stage) for k in e.keys}


def test_worker_killed_once_is_retried_and_everything_completes(tmp_path, six):
    marker = tmp_path / "killed-once"
    r = subprocess.run(_extract(six, tmp_path / "cache"), capture_output=True, text=True, timeout=180,
                       env=_env(AVPIPE_TOY_KILL="v4", AVPIPE_TOY_KILL_ONCE=str(marker)))
    assert marker.exists(), "the hook never killed a worker"
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIGKILL" in r.stderr and "retrying" in r.stderr
    assert _done(tmp_path / "cache", "toy_a") == {f"v{i}.mp4" for i in range(6)}
    assert _done(tmp_path / "cache", "toy_b") == {f"v{i}.mp4" for i in range(6)}
    with Cache(tmp_path / "cache") as c:
        assert c.failures() == []


def test_video_that_always_kills_its_worker_fails_alone_and_is_not_sticky(tmp_path, six):
    cache = tmp_path / "cache"
    env = _env(AVPIPE_TOY_KILL="v4")
    r = subprocess.run(_extract(six, cache), capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    failed_lines = [ln for ln in r.stdout.splitlines() if "FAILED" in ln]
    assert len(failed_lines) == 1 and "toy_a v4.mp4" in failed_lines[0], r.stdout
    assert "SIGKILL" in failed_lines[0]
    assert _done(cache, "toy_a") == {f"v{i}.mp4" for i in range(6)} - {"v4.mp4"}
    with Cache(cache) as c:
        (f,) = c.failures()
        assert (f.key, f.error_type, f.transient) == ("v4.mp4", "WorkerDied", True)
        assert "killed by SIGKILL" in f.message
        first = f.time
    # not sticky: the next run (no --retry-failed) tries v4 again by itself
    r = subprocess.run(_extract(six, cache), capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 1 and "not retried" not in r.stdout
    with Cache(cache) as c:
        assert c.failures()[0].time > first
    r = subprocess.run(_extract(six, cache), capture_output=True, text=True, timeout=180, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert _done(cache, "toy_b") == {f"v{i}.mp4" for i in range(6)}


def test_segfaulting_video_is_recorded_with_the_signal_and_the_workers_stderr(tmp_path, six):
    cache = tmp_path / "cache"
    r = subprocess.run(_extract(six, cache), capture_output=True, text=True, timeout=180,
                       env=_env(AVPIPE_TOY_KILL="v1", AVPIPE_TOY_KILL_SIGNAL="SIGSEGV"))
    assert r.returncode == 1, r.stdout + r.stderr
    with Cache(cache) as c:
        (f,) = c.failures()
    assert f.key == "v1.mp4" and f.transient
    assert "segmentation fault (SIGSEGV)" in f.message and "Fatal Python error: Segmentation fault" in f.message
    assert "-- worker stderr --" in f.traceback and "toy_stages.py" in f.traceback  # faulthandler's stack
    assert _done(cache, "toy_a") == {f"v{i}.mp4" for i in range(6)} - {"v1.mp4"}


def test_sigkill_of_the_driver_takes_its_workers_down(tmp_path, six):
    psutil = pytest.importorskip("psutil")
    p = subprocess.Popen(_extract(six, tmp_path / "cache", "toy_slow"), env=_env(AVPIPE_TOY_SLEEP="30"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        driver = psutil.Process(p.pid)
        workers: list = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:  # wait for the pool workers
            time.sleep(0.2)
            workers = [c for c in driver.children(recursive=True) if "python" in c.name().lower()]
        time.sleep(2.0)  # let them start computing (toy_slow sleeps 30 s per video)
        workers = [c for c in driver.children(recursive=True) if "python" in c.name().lower()]
        assert len(workers) >= 2, "no pool workers started"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [w for w in alive if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    for w in alive:  # do not leak them into the rest of the test run
        w.kill()
    assert not alive, f"{len(alive)} worker processes outlived the driver by 10 s"


def test_disk_full_while_writing_a_shard_is_named_and_retried(tmp_path, videos, monkeypatch):
    import avpipe.pipeline.shard as shard_mod

    real = shard_mod.write_result

    def full(h5, cid, res, prov):
        if prov.get("stage") == "toy_a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(h5, cid, res, prov)

    monkeypatch.setattr(shard_mod, "write_result", full)
    cache = tmp_path / "cache"
    s = run_extract(cache, videos, stages=["toy_b"], progress=False)
    assert s.exit_code == 1
    fails = [f for f in s.failures if f.stage == "toy_a"]
    assert len(fails) == 4
    for f in fails:
        assert f.error_type == "DiskFull" and f.transient
        assert f.message.startswith(f"disk full: {cache}, ") and f.message.endswith(" MB free")
    with Cache(cache) as c:
        assert c.list("toy_a") == []  # nothing half-written is indexed ...
    assert not [p for p in (cache / "shards").rglob("*") if p.is_file() and "toy_a" in p.parts]  # ... or left
    from click.testing import CliRunner

    from avpipe.cli import main

    out = CliRunner().invoke(main, ["inspect", "b.mp4", "--cache", str(cache)]).output
    assert "FAILED DiskFull: disk full: " in out and "transient: retried by the next extract" in out
    monkeypatch.setattr(shard_mod, "write_result", real)
    s = run_extract(cache, videos, stages=["toy_b"], progress=False)  # no --retry-failed needed
    assert s.exit_code == 0, s.render()
    assert s.stages[1].computed == 4


def test_failure_kinds():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError("Unable to synchronously write data (file write failed: errno = 28)"))
    assert not is_disk_full(OSError(errno.ENOENT, "No such file"))

    class TerminatedWorkerError(Exception):
        pass

    exc = TerminatedWorkerError("A worker process managed by the executor was unexpectedly terminated. "
                                "The exit codes of the workers are {SIGSEGV(-11)}")
    cause = worker_death_cause(exc, stderr_tail="Fatal Python error: Segmentation fault\n")
    assert "segmentation fault (SIGSEGV)" in cause and "Fatal Python error" in cause


def test_index_files_from_before_the_transient_column_still_work(tmp_path):
    path = tmp_path / "index.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE failures (fingerprint TEXT NOT NULL, content_id TEXT NOT NULL, "
               "stage TEXT NOT NULL, key TEXT, error_type TEXT NOT NULL, message TEXT NOT NULL, "
               "traceback TEXT, time REAL NOT NULL, PRIMARY KEY (fingerprint, content_id))")
    db.execute("INSERT INTO failures VALUES ('fp', 'cid', 'probe', 'a.mp4', 'StageError', 'bad', '', 1.0)")
    db.commit()
    db.close()
    with Index(path, readonly=True) as ro:  # read-only: no migration, still readable
        assert [f.transient for f in ro.failures()] == [False] and ro.failed("fp") == {"cid"}
    with Index(path) as ix:
        (f,) = ix.failures()
        assert (f.key, f.transient) == ("a.mp4", False)
        assert ix.failed("fp") == {"cid"}  # old failures stay sticky


def test_inspect_prints_an_entry_warning(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import avpipe.pipeline.report as report
    from avpipe.cli import main

    warning = "mean word probability 0.18 over 7 words — English-only model tiny.en: ..."
    rep = {"content_id": "c" * 40, "keys": ["a.mp4"], "failures": [], "entries": [
        {"stage": "asr", "fingerprint": "f" * 64, "rows": 7, "shard": "s", "created": 0.0, "shape": [7, 2],
         "dtype": "float64", "dims": 2, "mask_coverage": 1.0, "extras": [],
         "attrs": {"low_confidence": True, "warning": warning}}]}
    monkeypatch.setattr(report, "inspect_video", lambda cache, video: rep)
    Cache(tmp_path / "cache", create=True).close()
    out = CliRunner().invoke(main, ["inspect", "a.mp4", "--cache", str(tmp_path / "cache")]).output
    assert f"WARNING: {warning}" in out
