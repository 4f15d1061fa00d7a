"""Processes: SIGKILL at random points, two extract runs on one cache, planning imports."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.lock import CacheLock
from avpipe.pipeline.store import Cache
from tests.media import make_clip
from tests.pipeline.subproc import toy_env as _env


def _extract(videos: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
            "--stages", "toy_slow,toy_b", "--no-progress", *extra]


def _state(cache: Path) -> dict:
    with Cache(cache) as c:
        return {(e.stage, e.content_id): c.read(e.stage, e.content_id, fingerprint=e.fingerprint).data
                for e in c.list()}


@pytest.fixture(scope="module")
def many(tmp_path_factory, clip_bank) -> Path:
    v = tmp_path_factory.mktemp("many")
    for i in range(8):
        make_clip(v / f"v{i}.mp4", seed=10 + i, seconds=1.0)
    return v


def test_sigkill_then_rerun_equals_clean_run(tmp_path, many):
    clean = tmp_path / "clean"
    r = subprocess.run(_extract(many, clean), env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ref = _state(clean)
    assert len(ref) == 8 * 4
    cache = tmp_path / "killed"
    rng = np.random.default_rng(0)
    partial_counts = []
    for attempt, delay in enumerate(sorted(rng.uniform(0.8, 2.5, size=3))):
        with Cache(cache, create=True) as c:
            before = {(e.stage, e.content_id): e.shard for e in c.list()}
        p = subprocess.Popen(_extract(many, cache), env=_env(AVPIPE_TOY_SLEEP="0.2"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        with Cache(cache) as c:  # what the index calls complete is readable and kept
            after = {(e.stage, e.content_id): e.shard for e in c.list()}
            for k, shard in before.items():
                assert after.get(k) == shard, "a completed entry was redone or lost"
            for e in c.list():
                c.read(e.stage, e.content_id, fingerprint=e.fingerprint).data
            partial_counts.append(len(after))
    assert any(0 < n < len(ref) for n in partial_counts), f"no kill landed mid-run: {partial_counts}"
    log = tmp_path / "rerun.log"
    with Cache(cache) as c:
        done_before = {(e.stage, e.content_id) for e in c.list()}
    r = subprocess.run(_extract(many, cache), env=_env(AVPIPE_TOY_LOG=str(log)), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    redone = {tuple(line.split()) for line in log.read_text().splitlines()} if log.exists() else set()
    assert not (redone & done_before), "completed entries were recomputed"
    got = _state(cache)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    v = subprocess.run([sys.executable, "-m", "avpipe", "cache", "verify", "--cache", str(cache)],
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout


def test_second_run_waits_for_the_lock_then_finds_work_done(tmp_path, many):
    cache = tmp_path / "cache"
    r = subprocess.run(_extract(many, cache), env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    lock = CacheLock(cache, purpose="test holder")
    lock.acquire()
    try:
        p = subprocess.Popen(_extract(many, cache), env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)
        assert p.poll() is None, "second run did not wait for the lock"
    finally:
        lock.release()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0
    assert "waiting" in err and "test holder" in err
    assert "computed" in out and "all done" in out


def test_warm_planning_is_fast_and_never_imports_torch(tmp_path, many):
    cache = tmp_path / "cache"
    code = f"""
import sys, time
from avpipe.pipeline.runner import run_extract
run_extract({str(cache)!r}, {str(many)!r}, stages=['toy_b'], progress=False)
t = time.perf_counter()
s = run_extract({str(cache)!r}, {str(many)!r}, stages=['toy_b'], progress=False)
print(s.planning_s, time.perf_counter() - t, 'torch' in sys.modules, s.exit_code)
"""
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    plan_s, total_s, torch_loaded, rc = r.stdout.split()
    assert float(plan_s) < 2.0 and float(total_s) < 2.0
    assert torch_loaded == "False" and rc == "0"


def test_sigkill_while_a_chunked_result_is_written_indexes_nothing_partial(tmp_path, clip_bank):
    """A worker killed after the first chunks of a video reached the task's temp shard (another
    video of the same task already complete in it): nothing of that task is indexed, the temp
    file is an orphan ``cache gc`` removes, and a rerun equals a clean run."""
    import shutil

    vids = tmp_path / "v"
    vids.mkdir()
    for i, n in enumerate(["a.mp4", "b.mp4", "kill.mp4"]):
        shutil.copy(clip_bank / f"c{i}.mp4", vids / n)
    cmd = [sys.executable, "-m", "avpipe", "extract", "--videos", str(vids), "--stages", "toy_chunks",
           "--no-progress", "--cache"]
    clean = tmp_path / "clean"
    r = subprocess.run(cmd + [str(clean)], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    cache = tmp_path / "killed"
    r = subprocess.run(cmd + [str(cache)], env=_env(AVPIPE_TOY_KILL="kill"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    with Cache(cache) as c:
        assert not [e for e in c.list() if e.stage == "toy_chunks"]
    temps = [p for p in (cache / "shards" / "toy_chunks").rglob("*") if p.is_file()]
    assert temps and all(p.name.endswith(".tmp") for p in temps)
    with __import__("h5py").File(temps[0], "r") as h5:  # the kill landed mid-write
        assert len(h5.keys()) >= 1
    g = subprocess.run([sys.executable, "-m", "avpipe", "cache", "gc", "--cache", str(cache)],
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert g.returncode == 0, g.stdout + g.stderr
    assert not [p for p in (cache / "shards" / "toy_chunks").rglob("*") if p.is_file()]
    r = subprocess.run(cmd + [str(cache)], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got, ref = _state(cache), _state(clean)
    assert got.keys() == ref.keys() and len(ref) == 6
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
