"""A Dask cluster that goes away mid-run: its faults are the cluster's, not the videos'.

Real processes: a ``dask scheduler`` and a ``dask worker`` started as subprocesses on loopback,
the scheduler SIGKILLed while a task runs. Short on purpose (2-core CI)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from avpipe.pipeline.faults import CLUSTER_LOST, is_cluster_fault
from avpipe.pipeline.runner import Executor, run_extract, task_size
from avpipe.pipeline.store import Cache
from tests.pipeline.subproc import toy_env

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def _cluster(tmp_path: Path, workers: int = 1, **env_extra: str):
    """A scheduler and ``workers`` single-threaded workers (each under its nanny), separate
    processes; yields (scheduler file, [scheduler, worker processes])."""
    sf = tmp_path / "scheduler.json"
    env = toy_env(**env_extra)
    procs = [_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(sf)], env)]
    try:
        deadline = time.monotonic() + 60
        while not sf.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(workers):
            procs.append(_start(["distributed.cli.dask_worker", "--scheduler-file", str(sf), "--nworkers", "1",
                                 "--nthreads", "1", "--no-dashboard"], env))
        yield sf, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.fixture()
def cluster_procs(tmp_path):
    with _cluster(tmp_path, AVPIPE_TOY_SLEEP="0.6", AVPIPE_TOY_LOG=str(tmp_path / "toy.log")) as c:
        yield c


def _snapshot(cache: Path) -> dict:
    with Cache(cache) as c:
        out = {}
        for e in c.list():
            ent = c.read(e.stage, e.content_id, fingerprint=e.fingerprint)
            out[(e.stage, e.content_id)] = (ent.data.tobytes(), None if ent.mask is None else ent.mask.tobytes())
        return out


def test_a_killed_dask_worker_is_absorbed_with_identical_results(tmp_path, videos):
    """A worker SIGKILLed mid-task: Dask re-runs its task elsewhere, the run ends 0, same bytes."""
    s = run_extract(tmp_path / "serial", videos, stages=["toy_slow"], progress=False)
    assert s.exit_code == 0
    marker = tmp_path / "killed-once"
    with _cluster(tmp_path, workers=2, AVPIPE_TOY_KILL="b.mp4", AVPIPE_TOY_KILL_ONCE=str(marker)) as (sf, _):
        with distributed.Client(scheduler_file=str(sf)) as c:
            c.wait_for_workers(2, timeout=60)
        s = run_extract(tmp_path / "dask", videos, stages=["toy_slow"], backend="dask",
                        scheduler_file=str(sf), progress=False)
    assert marker.exists(), "no worker was killed"
    assert s.exit_code == 0, s.render()
    assert _snapshot(tmp_path / "dask") == _snapshot(tmp_path / "serial")


def test_scheduler_loss_is_transient_and_retried_without_retry_failed(tmp_path, videos, cluster_procs,
                                                                      monkeypatch):
    sf, procs = cluster_procs
    log = tmp_path / "toy.log"
    monkeypatch.setenv("AVPIPE_TOY_LOG", str(log))

    def kill_scheduler() -> None:  # as soon as the first toy_slow video ran on the worker
        deadline = time.monotonic() + 60
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[0].kill()

    threading.Thread(target=kill_scheduler, daemon=True).start()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        s = run_extract(tmp_path / "cache", videos, stages=["toy_slow"], backend="dask",
                        scheduler_file=str(sf), progress=False)
    assert s.exit_code == 1 and s.cluster_lost
    lost = [f for f in s.failures if f.stage == "toy_slow"]
    assert lost and all(f.error_type == CLUSTER_LOST and f.transient for f in lost), s.render()
    text = s.render()
    assert text.count("CLUSTER LOST") == 1 and "FAILED toy_slow" not in text
    with Cache(tmp_path / "cache") as c:  # stored as transient: the plan retries them
        stored = c.index.failures("toy_slow")
    assert stored and all(f.transient and f.error_type == CLUSTER_LOST for f in stored)
    # the next run (locally) retries them by itself: no --retry-failed, nothing "not retried"
    monkeypatch.setenv("AVPIPE_TOY_SLEEP", "0")
    again = run_extract(tmp_path / "cache", videos, stages=["toy_slow"], progress=False)
    assert again.exit_code == 0, again.render()
    st = {x.name: x for x in again.stages}["toy_slow"]
    assert st.failed_before == 0 and st.cached + st.computed == 4 and st.computed >= len(lost)


def test_cluster_fault_classification():
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    assert is_cluster_fault(FutureCancelledError("k", reason="scheduler-connection-lost"))
    assert is_cluster_fault(CommClosedError("in <TCP>: Stream is closed"))
    assert is_cluster_fault(OSError("Timed out trying to connect to tcp://10.0.0.5:8786 after 30 s"))
    from distributed.client import ClosedClientError

    assert is_cluster_fault(ClosedClientError("the client was closed"))
    from types import SimpleNamespace

    killed = distributed.KilledWorker("t", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    assert not is_cluster_fault(killed)  # a task that kills its workers: a worker death, isolated
    assert not is_cluster_fault(RuntimeError("toy failure for a.mp4"))
    assert not is_cluster_fault(ValueError("per-frame stage returned 9 rows"))


def test_tasks_are_sized_from_the_clusters_workers():
    # the old sizing treated an unknown cluster (jobs <= 1) as one worker: 7 shards instead of 28
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with Executor(1, "dask", cluster.scheduler_address) as ex:
            assert ex.slots() == 2
            assert task_size(8, ex.slots(), 8) == 2
            cluster.scale(3)
            cluster.wait_for_workers(3)
            assert ex.slots() == 3  # asked again: workers that joined count
    assert task_size(8, Executor(1).slots(), 8) == 8  # local, one process: unchanged


def test_single_thread_cluster_runs_tasks_on_the_worker_not_the_driver(tmp_path, videos, cluster_procs):
    """joblib's Dask backend ran every task in the driver when the cluster had one worker thread."""
    from avpipe.pipeline.config import PipelineConfig

    sf, _ = cluster_procs
    log = tmp_path / "load.log"
    cfg = PipelineConfig.from_dict({"stages": {"toy_load": {"log": str(log)}}})
    s = run_extract(tmp_path / "cache", videos, cfg, stages=["toy_load"], backend="dask",
                    scheduler_file=str(sf), progress=False)
    assert s.exit_code == 0, s.render()
    pids = {v for k, v in (ln.split() for ln in log.read_text().splitlines()) if k == "toy_load.load"}
    assert pids and str(os.getpid()) not in pids


@pytest.mark.parametrize("args,msg", [
    (["--scheduler-file", "s.json"], "need --backend dask"),
    (["--backend", "dask", "--scheduler", "tcp://h:1", "--scheduler-file", "s.json"], "either --scheduler"),
])
def test_extract_scheduler_flags_are_checked(tmp_path, videos, args, msg):
    from click.testing import CliRunner

    from avpipe.cli import main

    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(tmp_path / "c"), *args])
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "c").exists()
