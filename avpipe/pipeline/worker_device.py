"""What ``--device`` means on the worker that runs a task.

Why a module of its own: the device is resolved on the worker, never on the driver (the driver
may have no GPU at all, or other GPUs than the node that runs the task). A worker started by
:mod:`avpipe.scale.gpu_workers` sees one GPU (``CUDA_VISIBLE_DEVICES`` narrowed to it) and is
told which one in ``AVPIPE_WORKER_GPU``. On such a worker:

* ``auto`` / ``cuda`` — the worker's own GPU (torch's ``cuda`` is its only visible device);
* ``cuda:N`` — the machine's GPU ``N`` (as ``nvidia-smi`` numbers it). The driver sends those
  tasks only to the workers of GPU ``N`` (:func:`device_resources`); there it becomes ``cuda:0``,
  the one device that worker sees. Anywhere else it is an error, not a silent other GPU;
* ``cpu`` / ``mps`` — unchanged.

On any other process (local runs, plain ``dask worker``) the string is torch's, unchanged.
"""
from __future__ import annotations

import os
import re
from typing import Any

from avpipe.pipeline.plan import PlanError

#: Set by the per-GPU launcher: the GPU (machine numbering) this worker process owns.
WORKER_GPU_ENV = "AVPIPE_WORKER_GPU"
#: Prefix of the Dask resource a per-GPU worker advertises: ``gpu<N>``.
GPU_RESOURCE = "gpu"

_CUDA_N = re.compile(r"^cuda:(\d+)$")


class DeviceNotOnWorker(RuntimeError):
    """An explicit ``cuda:N`` reached a per-GPU worker that owns another GPU."""


class DeviceNotInCluster(PlanError):
    """``--device cuda:N`` on a cluster of per-GPU workers of which none owns GPU ``N``."""


def worker_gpu() -> str | None:
    """The GPU this process was started for by the per-GPU launcher, or None."""
    return os.environ.get(WORKER_GPU_ENV) or None


def worker_device(requested: str) -> str:
    """``requested`` (a ``--device`` value) as this process must pass it to torch."""
    gpu = worker_gpu()
    m = _CUDA_N.match(requested)
    if gpu is None or m is None:
        return requested
    if m.group(1) == gpu:
        return "cuda:0"
    raise DeviceNotOnWorker(f"--device {requested} names GPU {m.group(1)}, but this worker was started for "
                            f"GPU {gpu} only (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})")


def device_resources(requested: str, workers: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """The Dask resources a task needs so that ``--device requested`` runs where it can, given the
    scheduler's ``workers`` (``scheduler_info()["workers"]``). None: any worker will do.

    Only an explicit ``cuda:N`` on a cluster with per-GPU workers is restricted, to the workers
    advertising ``gpu<N>``; if none does, :class:`DeviceNotInCluster` (a usage error) names the
    GPUs the cluster has. Restricting by resource rather than by worker address keeps working
    when a worker of that GPU is restarted (new address, same resource)."""
    m = _CUDA_N.match(requested)
    if m is None:
        return None
    gpus = sorted({r[len(GPU_RESOURCE):] for w in workers.values() for r in (w.get("resources") or {})
                   if r.startswith(GPU_RESOURCE) and r[len(GPU_RESOURCE):]})
    if not gpus:
        return None  # plain workers: each reads cuda:N in torch's numbering
    if m.group(1) not in gpus:
        raise DeviceNotInCluster(f"--device {requested}: no worker of this cluster owns GPU {m.group(1)} "
                                 f"(per-GPU workers for GPU {', '.join(gpus)}); use --device cuda or auto to "
                                 "use every worker's own GPU")
    return {f"{GPU_RESOURCE}{m.group(1)}": 1}
