"""Loky pool workers keep what they loaded (:mod:`avpipe.pipeline.loky_memory`)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from avpipe.pipeline.loky_memory import keep_worker_memory

_HELD: list[np.ndarray] = []


def _pid() -> int:
    return os.getpid()


def _load_a_model(keep: bool) -> int:
    """What a stage's first task in a worker does: load 400 MB and keep it (then work a while,
    so that loky's once-a-second memory check runs after this task)."""
    if keep:
        keep_worker_memory()
    if not _HELD:
        _HELD.append(np.ones(400 << 20, np.uint8))
    time.sleep(1.2)
    return os.getpid()


@pytest.mark.parametrize("keep", [False, True], ids=["loky-default", "kept"])
def test_a_worker_that_loaded_a_model_is_restarted_only_without_keep(keep):
    """Without the call loky takes the loaded model for a leak and replaces the worker (so the
    next task loads the model again in a fresh process); with it the worker stays."""
    from joblib.externals.loky import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_pid).result()  # loky measures the worker's memory after this
        pids = [pool.submit(_load_a_model, keep).result() for _ in range(3)]
    if keep:
        assert set(pids) == {first}
    else:
        assert len(set(pids)) > 1  # the guard this module turns off is still there

