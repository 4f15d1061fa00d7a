"""Whisper's word-timing DTW in NumPy, equal to its numba kernel, without compiling it.

Why: ``whisper.timing.dtw_cpu`` (and the ``backtrace`` it calls) are numba-jitted without a cache,
so every process that asks Whisper for word timestamps first compiles them: seconds, paid by
every extraction worker on every run, a large share of the ``asr`` stage's wall time on short
batches (figures in BENCHMARKS.md, "Whole offline extraction, fourth round"). Here the same
recurrence runs one anti-diagonal at a time (every cell of a diagonal depends only on the two
diagonals before it), vectorised: slower per window than the compiled kernel, but a 30-s window
costs far less than the compile, and nothing is compiled.

Exactly equal, not close: each cell takes the same predecessor by the same strict comparisons (ties
go to the left neighbour, as in Whisper's ``if/elif/else``), adds in float64 and stores float32, as
numba does with Whisper's float32 cost array and float64 input; the backtrace walks the same path.
``tests/extractors/test_whisper_dtw.py`` compares the two on random and tie-laden matrices.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np


def dtw_cpu(x: np.ndarray) -> np.ndarray:
    """Whisper's ``dtw_cpu`` on an (N, M) cost matrix: the alignment path as a (2, L) int64 array
    (token indices, time indices)."""
    x = np.asarray(x, np.float64)
    N, M = x.shape
    cost = np.full((N + 1, M + 1), np.inf, np.float32)
    trace = np.full((N + 1, M + 1), -1.0, np.float32)
    cost[0, 0] = 0
    for d in range(2, N + M + 1):  # cells (i, j) with i + j = d, 1 <= i <= N, 1 <= j <= M
        i = np.arange(max(1, d - M), min(N, d - 1) + 1)
        j = d - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        c = np.where(t == 0, c0, np.where(t == 1, c1, c2))
        cost[i, j] = x[i - 1, j - 1] + c.astype(np.float64)
        trace[i, j] = t
    return backtrace(trace)


def backtrace(trace: np.ndarray) -> np.ndarray:
    """Whisper's ``backtrace``: the path from the last cell back to (0, 0), reversed (2, L)."""
    trace = trace.copy()
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    trace[0, :] = 2
    trace[:, 0] = 1
    steps = trace.tolist()
    result = []
    while i > 0 or j > 0:
        result.append((i - 1, j - 1))
        t = steps[i][j]
        if t == 0:
            i -= 1
            j -= 1
        elif t == 1:
            i -= 1
        elif t == 2:
            j -= 1
        else:
            raise ValueError("Unexpected trace[i, j]")
    return np.array(result)[::-1, :].T


@contextlib.contextmanager
def numpy_dtw() -> Iterator[None]:
    """Within the block, Whisper's word timing uses :func:`dtw_cpu` instead of its numba kernel
    (the CUDA path, ``dtw_cuda``, is left alone)."""
    import whisper.timing as timing

    original: Any = timing.dtw_cpu
    timing.dtw_cpu = dtw_cpu
    try:
        yield
    finally:
        timing.dtw_cpu = original
