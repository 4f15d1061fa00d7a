"""Loky pool workers keep what they loaded: no restart for memory growth.

Why: loky takes a worker's memory after its first task and, once it has grown by 300 MB, stops the
worker after a task and starts a fresh one (its guard against leaking tasks). A loaded model —
torch and MTCNN, Whisper, MiniLM — or a sweep's feature bank looks exactly like that leak, so the
workers of ``avpipe extract --jobs N`` and ``avpipe sweep --jobs N`` were restarted during a run
and each restart imported torch and loaded the model or bank again, a large share of a short
batch's wall time (BENCHMARKS.md, "Whole offline extraction, fourth round").
Memory is bounded by design instead: :mod:`avpipe.pipeline.stage_memo` keeps one loaded stage per
worker and frees it when the next stage starts; a sweep worker's bank cache holds the banks of
the cells it runs.
"""
from __future__ import annotations

import sys


def keep_worker_memory() -> None:
    """Called at the start of a task: in a loky worker, turn the memory-growth restart off (a
    no-op in any other process, and with a joblib whose loky lacks the setting)."""
    loky = sys.modules.get("joblib.externals.loky.process_executor")
    if loky is not None and hasattr(loky, "_MAX_MEMORY_LEAK_SIZE"):
        loky._MAX_MEMORY_LEAK_SIZE = sys.maxsize
