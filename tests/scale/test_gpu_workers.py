"""One Dask worker per GPU: each sees its own GPU, and ``--device`` is read on the worker.

Real processes on this CPU-only machine: a ``dask scheduler`` and the workers started by
:func:`avpipe.scale.gpu_workers.start_workers` for fake GPU ids. No GPU is needed: a task reports
the device string its worker resolved and the ``CUDA_VISIBLE_DEVICES`` it saw."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from avpipe.pipeline.plan import PlanError
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.stage import Runtime
from avpipe.pipeline.store import Cache
from avpipe.pipeline.worker_device import (WORKER_GPU_ENV, DeviceNotInCluster, DeviceNotOnWorker, device_resources,
                                     worker_device)
from avpipe.scale.gpu_workers import GpuWorkersError, parse_gpus, start_workers, stop_workers, worker_specs
from tests.pipeline.subproc import toy_env

distributed = pytest.importorskip("distributed")


def test_worker_specs_narrow_each_worker_to_its_gpu():
    specs = worker_specs(["0", "1", "3"], scheduler="tcp://h:8786", cores=12, host="node7")
    assert [s.env for s in specs] == [{"CUDA_VISIBLE_DEVICES": g, WORKER_GPU_ENV: g} for g in ("0", "1", "3")]
    for s, g in zip(specs, ("0", "1", "3")):
        a = s.argv
        assert a[a.index("--nthreads") + 1] == "4"  # 12 cores / 3 workers
        assert a[a.index("--nworkers") + 1] == "1"
        assert a[a.index("--resources") + 1] == f"gpu{g}=4"
        assert a[a.index("--name") + 1] == f"node7-gpu{g}"
    a = worker_specs(["0"], scheduler_file="s.json", cores=1, nthreads=2)[0].argv
    assert a[a.index("--nthreads") + 1] == "2"
    assert "--scheduler-file" in worker_specs(["0"], scheduler_file="s.json")[0].argv
    with pytest.raises(GpuWorkersError, match="either"):
        worker_specs(["0"])


def test_parse_gpus(monkeypatch):
    assert parse_gpus("0, 2") == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-1a2b")
    assert parse_gpus(None) == ["2", "GPU-1a2b"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(GpuWorkersError, match="no GPU is visible"):
        parse_gpus(None)
    with pytest.raises(GpuWorkersError, match="twice"):
        parse_gpus("1,1")
    with pytest.raises(GpuWorkersError, match="GPU numbers"):
        parse_gpus("0,,1")


def test_worker_device_maps_the_machines_gpu_to_the_workers_only_device(monkeypatch):
    monkeypatch.delenv(WORKER_GPU_ENV, raising=False)
    assert worker_device("cuda:1") == "cuda:1"  # not a per-GPU worker: torch's numbering
    monkeypatch.setenv(WORKER_GPU_ENV, "1")
    assert worker_device("cuda:1") == "cuda:0"
    assert [worker_device(d) for d in ("auto", "cuda", "cpu")] == ["auto", "cuda", "cpu"]
    with pytest.raises(DeviceNotOnWorker, match="names GPU 0, but this worker was started for GPU 1"):
        worker_device("cuda:0")


def test_device_resources_route_cuda_n_to_its_gpus_workers():
    per_gpu = {"tcp://a:1": {"resources": {"gpu0": 2}}, "tcp://a:2": {"resources": {"gpu1": 2}}}
    plain = {"tcp://a:1": {"resources": {}}, "tcp://a:2": {}}
    assert device_resources("cuda:1", per_gpu) == {"gpu1": 1}
    assert device_resources("cuda", per_gpu) is None and device_resources("auto", per_gpu) is None
    assert device_resources("cuda:1", plain) is None
    with pytest.raises(DeviceNotInCluster, match="no worker of this cluster owns GPU 5") as e:
        device_resources("cuda:5", per_gpu)
    assert isinstance(e.value, PlanError)  # a usage error: exit 2


def test_cli_refuses_bad_gpus_as_usage_error(monkeypatch):
    from avpipe.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    r = CliRunner().invoke(main, ["gpu-workers", "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 2 and "no GPU is visible" in r.output
    r = CliRunner().invoke(main, ["gpu-workers", "--gpus", "0"])
    assert r.exit_code == 2 and "either a scheduler" in r.output


@contextlib.contextmanager
def _gpu_cluster(tmp_path: Path, gpus: list[str]):
    """A scheduler process and one worker per (fake) GPU started by start_workers."""
    sf = tmp_path / "scheduler.json"
    env = toy_env()
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", "0", "--no-dashboard", "--scheduler-file", str(sf)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while not sf.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = start_workers(worker_specs(gpus, scheduler_file=str(sf), nthreads=1), base_env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with distributed.Client(scheduler_file=str(sf)) as c:
            c.wait_for_workers(len(gpus), timeout=90)
        yield sf, workers
    finally:
        stop_workers(workers, timeout=10)
        sched.kill()
        sched.wait()


def _devices(cache: Path) -> list[tuple[str, str, int]]:
    with Cache(cache) as c:
        return sorted((a["cuda_visible"], a["device"], a["pid"])
                      for e in c.list() if e.stage == "toy_device"
                      for a in [c.read(e.stage, e.content_id, fingerprint=e.fingerprint).attrs])


def test_each_worker_sees_its_own_gpu_and_resolves_device_itself(tmp_path, videos):
    with _gpu_cluster(tmp_path, ["0", "1"]) as (sf, workers):
        with distributed.Client(scheduler_file=str(sf)) as c:
            import os

            seen = c.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get(WORKER_GPU_ENV)))
        assert sorted(seen.values()) == [("0", "0"), ("1", "1")]

        def extract(name: str, device: str):
            return run_extract(tmp_path / name, videos, stages=["toy_device"], backend="dask",
                               scheduler_file=str(sf), runtime=Runtime(device=device), progress=False)

        # cuda: every worker's own GPU; the string is resolved on the worker (the driver, this
        # test process, sees every GPU and no AVPIPE_WORKER_GPU)
        s = extract("cuda", "cuda")
        assert s.exit_code == 0, s.render()
        got = _devices(tmp_path / "cuda")
        assert len(got) == 4 and all(dev == "cuda" and cvd in ("0", "1") for cvd, dev, _ in got)
        assert os.getpid() not in {pid for _, _, pid in got}
        # cuda:1 (the machine's GPU 1): only GPU 1's worker runs it, as its cuda:0
        s = extract("cuda1", "cuda:1")
        assert s.exit_code == 0, s.render()
        got = _devices(tmp_path / "cuda1")
        assert len(got) == 4 and {(cvd, dev) for cvd, dev, _ in got} == {("1", "cuda:0")}
        assert len({pid for _, _, pid in got}) == 1  # one worker process (under its nanny)
        # a GPU no worker owns: refused before any task runs, as a usage error
        with pytest.raises(DeviceNotInCluster, match="GPU 7"):
            extract("cuda7", "cuda:7")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_gpu_workers_command_runs_the_workers_and_stops_them_with_it(tmp_path, sig):
    """``avpipe gpu-workers`` in the foreground: its workers join; SIGTERM (Ctrl-C, the end of a
    SLURM job) stops all of them and the command exits 0; killed outright, it leaves no worker."""
    import signal

    sf = tmp_path / "scheduler.json"
    env = toy_env()
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", "0", "--no-dashboard", "--scheduler-file", str(sf)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmd = None
    try:
        deadline = time.monotonic() + 60
        while not sf.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        cmd = subprocess.Popen([sys.executable, "-m", "avpipe", "gpu-workers", "--scheduler-file", str(sf),
                                "--gpus", "3,5", "--nthreads", "1"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        with distributed.Client(scheduler_file=str(sf)) as c:
            c.wait_for_workers(2, timeout=90)
            info = c.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(tuple(w["resources"]) for w in info) == [("gpu3",), ("gpu5",)]
            cmd.send_signal(getattr(signal, sig))
            _, err = cmd.communicate(timeout=60)
            assert "worker for GPU 3: pid" in err and "worker for GPU 5: pid" in err
            assert cmd.returncode == (0 if sig == "SIGTERM" else -signal.SIGKILL), err
            deadline = time.monotonic() + 30
            while c.scheduler_info(n_workers=-1)["workers"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not c.scheduler_info(n_workers=-1)["workers"]  # both workers went with it
    finally:
        if cmd is not None and cmd.poll() is None:
            cmd.kill()
            cmd.wait()
        sched.kill()
        sched.wait()


def test_slots_count_only_the_workers_a_restricted_task_may_use():
    """With ``--device cuda:1`` tasks are cut for GPU 1's worker threads, not the whole cluster's."""
    from avpipe.pipeline.runner import Executor

    class Client:  # the scheduler's answer, as distributed gives it
        def scheduler_info(self, n_workers: int = 0) -> dict:
            return {"workers": {"tcp://a:1": {"nthreads": 4, "resources": {"gpu0": 4}},
                                "tcp://a:2": {"nthreads": 2, "resources": {"gpu1": 2}}}}

    ex = Executor(1, "dask")
    ex._client = Client()
    ex.route_device("cuda")
    assert ex.slots() == 6
    ex.route_device("cuda:1")
    assert ex.slots() == 2
    with pytest.raises(DeviceNotInCluster):
        ex.route_device("cuda:2")
    ex._client = None
