"""One constructed, loaded stage per worker process, reused across that worker's tasks.

Why: a task that constructed its stage and ``load``-ed the model (Whisper, MiniLM, MTCNN, dlib)
itself would make a worker running ten tasks of a stage load its model ten times. The memo keeps the
stage of the most recent (stage class, fingerprint, runtime) in the process and hands it to
the next task with the same key. Only one entry is kept: stages run one after another, so when
the next stage starts, the previous model is released instead of piling up in every worker.
A stage whose ``load`` raised is not kept (the next task tries again and records the reason).
The memo is per thread: a Dask cluster of threads in one process never shares a stage object
between two tasks running at the same time.
"""
from __future__ import annotations

import threading
from typing import Any

from avpipe.pipeline.stage import Runtime, Stage

_LOCAL = threading.local()


def _memo() -> dict[tuple[str, str, str], Stage]:
    if not hasattr(_LOCAL, "memo"):
        _LOCAL.memo = {}
    return _LOCAL.memo  # type: ignore[no-any-return]


def _key(stage_cls: type[Stage], fingerprint: str, runtime: Runtime) -> tuple[str, str, str]:
    return (f"{stage_cls.__module__}.{stage_cls.__qualname__}", fingerprint, repr(runtime))


def loaded_stage(stage_cls: type[Stage], config: Any, runtime: Runtime, fingerprint: str) -> Stage:
    """The loaded stage for this key: from the memo, or constructed and loaded now (raises
    whatever ``load`` raises)."""
    key = _key(stage_cls, fingerprint, runtime)
    stage = _memo().get(key)
    if stage is not None:
        return stage
    release_stages()  # one model per worker at a time
    stage = stage_cls(config, runtime)
    stage.ensure_loaded()
    _memo()[key] = stage
    return stage


def release_stages() -> None:
    """Forget this thread's memoised stage (its model is freed with it)."""
    memo = _memo()
    if memo:
        memo.clear()
        import gc

        gc.collect()  # models hold reference cycles (torch modules): free them now, not later
        _trim_heap()


def _trim_heap() -> None:
    """Hand the C heap's free memory back to the system (glibc's ``malloc_trim``; elsewhere a
    no-op). Why: a pool worker lives through every stage of a run (see
    :mod:`avpipe.pipeline.loky_memory`), and the small blocks a freed model leaves on the heap would
    otherwise stay in its resident memory under the next stage's model."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim this way
        pass
