"""Thread counts that follow the free cores, so parallel workers do not oversubscribe them.

Why: torch uses every core by default; with ``--jobs 2`` on 2 cores each worker then runs 2
threads on 1 core's worth of time, and when another process holds a core, training slows down
4–60×. The default is the cores this process may run on (``os.sched_getaffinity``, which honours
taskset, cgroups' cpusets and container limits) divided among the workers, at least 1.
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


def default_num_threads(jobs: int = 1) -> int:
    """Threads per worker when ``jobs`` workers share the free cores."""
    return max(1, available_cores() // max(1, int(jobs)))


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
