"""Thread counts that follow the free cores, so parallel workers do not oversubscribe them.

Why: torch uses every core by default; with ``--jobs 2`` on 2 cores each worker then runs 2
threads on 1 core's worth of time, and when another process holds a core, a spinning intra-op
thread pool waiting for a core it does not get is far slower than one thread (figures and the
command in BENCHMARKS.md, "Torch threads on a loaded machine"). The default is the cores this
process may run on (``os.sched_getaffinity``, which honours taskset, cgroups' cpusets and
container limits) less the cores other processes keep busy (the 1-minute load average), divided
among the workers, at least 1.

A load average seen through a container can include the host's other work; that only makes the
default smaller (never oversubscribed), and ``--num-threads`` overrides it. The runner applies
the count (:func:`apply_torch_threads`) in every execution mode; stages never set it.
"""
from __future__ import annotations

import os
import sys


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def busy_cores() -> int:
    """Cores other processes keep busy now: the 1-minute load average, rounded (0 where the
    platform has none). Read before this run starts its own work, so it is the others' load."""
    try:
        return max(0, int(round(os.getloadavg()[0])))
    except (AttributeError, OSError):
        return 0


def free_cores() -> int:
    """Cores this process may run on that nobody else is using, at least 1."""
    cores = available_cores()
    return max(1, cores - min(busy_cores(), cores - 1))


def default_num_threads(jobs: int = 1) -> int:
    """Threads per worker when ``jobs`` workers share the free cores."""
    return max(1, free_cores() // max(1, int(jobs)))


def apply_torch_threads(n: int | None, *, import_torch: bool = False) -> None:
    """``torch.set_num_threads(n)`` — only if torch is already imported (a stage that never
    uses torch must not pay its import), unless ``import_torch``. ``None``/0: leave as is."""
    if not n or n < 1:
        return
    if "torch" not in sys.modules and not import_torch:
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(int(n))
