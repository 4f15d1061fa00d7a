"""One Dask worker process per GPU, each seeing only its own GPU.

dask-cuda's approach without dask-cuda: each worker is a one-process ``dask worker``
started with ``CUDA_VISIBLE_DEVICES`` narrowed to its GPU, so inside it torch's ``cuda`` (and
``--device auto``) is that GPU and nothing in avpipe needs to pick one. Each also advertises the
Dask resource ``gpu<N>`` (so ``--device cuda:N`` can be routed to it, see
:mod:`avpipe.pipeline.worker_device`) and gets ``AVPIPE_WORKER_GPU=N``.

Why not dask-cuda itself: it pulls numba, pynvml and a CUDA-matched cudf/rmm stack into the
lock for what is, for avpipe's tasks (whole videos, no GPU arrays between tasks), only this
environment variable per process; ``dask-cuda-worker`` still works and is documented.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from avpipe.pipeline.threads import available_cores
from avpipe.pipeline.worker_device import GPU_RESOURCE, WORKER_GPU_ENV


class GpuWorkersError(ValueError):
    """The GPUs or the scheduler given to the launcher cannot be used (a usage error)."""


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one per-GPU worker: its GPU, command line and environment additions."""

    gpu: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, machine numbering: ``CUDA_VISIBLE_DEVICES`` if set (its
    entries, which may be UUIDs), else torch's device count (0 without CUDA)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [g.strip() for g in cvd.split(",") if g.strip() and not g.strip().startswith("-")]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch always installed
        return []


def parse_gpus(spec: str | None) -> list[str]:
    """``--gpus 0,1,3`` (or None: every visible GPU) as a list of distinct GPU ids."""
    if spec is None or not spec.strip():
        gpus = visible_gpus()
        if not gpus:
            raise GpuWorkersError("no GPU is visible to this process (CUDA_VISIBLE_DEVICES is empty or torch "
                                  "finds no CUDA device): name them with --gpus 0,1,...")
        return gpus
    gpus = [g.strip() for g in spec.split(",")]
    bad = [g for g in gpus if not g or "=" in g or " " in g]
    if bad:
        raise GpuWorkersError(f"--gpus {spec!r}: use GPU numbers (or UUIDs) separated by commas, e.g. 0,1")
    if len(set(gpus)) != len(gpus):
        raise GpuWorkersError(f"--gpus {spec!r} names a GPU twice: one worker per GPU")
    return gpus


def worker_specs(gpus: list[str], *, scheduler: str | None = None, scheduler_file: str | None = None,
                 nthreads: int | None = None, cores: int | None = None,
                 host: str | None = None) -> list[WorkerSpec]:
    """The worker commands for ``gpus``. Threads per worker: ``nthreads`` or this machine's cores
    shared among the workers (at least 1). Worker names are ``HOST-gpuN``, unique per machine."""
    if (scheduler is None) == (scheduler_file is None):
        raise GpuWorkersError("give either a scheduler address or a scheduler file")
    if not gpus:
        raise GpuWorkersError("no GPU to start a worker for")
    n = nthreads or max(1, (cores or available_cores()) // len(gpus))
    where = [_dask_opt("scheduler-file"), scheduler_file] if scheduler_file else [scheduler]
    host = host or socket.gethostname()
    specs = []
    for g in gpus:
        opts = {"nworkers": "1", "nthreads": str(n), "name": f"{host}-{GPU_RESOURCE}{g}",
                "resources": f"{GPU_RESOURCE}{g}={n}"}
        argv = [sys.executable, "-m", "distributed.cli.dask_worker", *where,
                *(x for k, v in opts.items() for x in (_dask_opt(k), v)), _dask_opt("no-dashboard")]
        specs.append(WorkerSpec(g, argv, {"CUDA_VISIBLE_DEVICES": g, WORKER_GPU_ENV: g}))
    return specs


def _dask_opt(name: str) -> str:
    """A ``dask worker`` command-line option (Dask's flags, not avpipe's)."""
    return "--" + name


def start_workers(specs: list[WorkerSpec], base_env: dict[str, str] | None = None,
                  **popen: object) -> list[subprocess.Popen]:
    """Start every worker, each in ``base_env`` (default: this process's environment) plus its
    own GPU's variables."""
    procs: list[subprocess.Popen] = []
    base = dict(os.environ if base_env is None else base_env)
    try:
        for s in specs:
            procs.append(subprocess.Popen(s.argv, env={**base, **s.env}, **popen))  # type: ignore[call-overload]
    except BaseException:
        stop_workers(procs)
        raise
    return procs


def stop_workers(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM each worker (its nanny closes it cleanly), SIGKILL what is left after ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _term_with_launcher() -> None:
    """In each worker before it starts (Linux): SIGTERM when the launcher dies, however it died,
    so a launcher killed with SIGKILL (or by the OOM killer) leaves no workers holding GPUs."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


def run_workers(specs: list[WorkerSpec], say: object = print) -> int:
    """Start the workers and stay in the foreground until one exits or this process is told to
    stop (SIGINT/SIGTERM, as SLURM does at the end of a job); then stop them all. The exit code
    is the first worker's that ended on its own (0 when stopped). Killed outright, the launcher
    takes its workers with it (``PR_SET_PDEATHSIG``)."""
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = start_workers(specs, preexec_fn=_term_with_launcher)
    try:
        for s, p in zip(specs, procs):
            say(f"worker for GPU {s.gpu}: pid {p.pid}, {s.argv[s.argv.index('--nthreads') + 1]} threads")  # type: ignore[operator]
        while not stopping:
            ended = [p for p in procs if p.poll() is not None]
            if ended:
                return ended[0].returncode or 0
            time.sleep(0.5)
        return 0
    finally:
        stop_workers(procs)
        for s, h in old.items():
            signal.signal(s, h)
