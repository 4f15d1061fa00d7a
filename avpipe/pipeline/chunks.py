"""Per-frame rows produced in chunks, so a stage's output never has to sit in memory whole.

Why: a per-frame stage on a 60-minute video holds ~108 000 rows; building them all (and the
intermediates behind them, e.g. log-mel's 96×64 patch per frame) before the shard is written
makes peak memory grow with the video. A stage may instead return a :class:`RowChunks` as
``StageResult.data``: the row count, row shape and dtype up front, and a factory that yields
the rows in order, a chunk at a time. The shard writer appends each chunk to the entry's
dataset as it comes (same dataset shape, chunking, compression and values as a whole array
would give), then drops it.

How a stage adopts it: compute what is cheap per video (masks, indices, the spectrogram), then
return ``RowChunks(n, row_shape, dtype, lambda: gen())`` where ``gen`` yields
``(k, *row_shape)`` arrays whose lengths add up to ``n``. The factory may be called more than
once (each call starts again), so :func:`materialize` (tests, in-process readers) and the writer
can both iterate it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Frames per chunk a built-in stage yields: small enough that a chunk's intermediates stay a few
# MB, large enough that per-chunk overhead is negligible. Non-semantic (outputs do not change).
CHUNK_FRAMES = 512


@dataclass
class RowChunks:
    """``n_rows`` rows of shape ``row_shape`` and ``dtype``, yielded in chunks by ``make()``."""

    n_rows: int
    row_shape: tuple[int, ...]
    dtype: Any
    make: Callable[[], Iterator[np.ndarray]]

    def __post_init__(self) -> None:
        self.n_rows = int(self.n_rows)
        self.row_shape = tuple(int(s) for s in self.row_shape)
        self.dtype = np.dtype(self.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_rows,) + self.row_shape

    def __len__(self) -> int:
        return self.n_rows

    def __iter__(self) -> Iterator[np.ndarray]:
        """The chunks, each checked against the declared row shape and dtype; a stage that
        yields more or fewer rows than it declared fails here rather than writing a short entry."""
        seen = 0
        for c in self.make():
            c = np.asarray(c)
            if c.shape[1:] != self.row_shape or c.dtype != self.dtype:
                raise ValueError(f"chunk of shape {c.shape} {c.dtype} does not match the declared rows "
                                 f"{self.row_shape} {self.dtype}")
            seen += int(c.shape[0])
            if seen > self.n_rows:
                raise ValueError(f"chunks yield more than the declared {self.n_rows} rows")
            yield c
        if seen != self.n_rows:
            raise ValueError(f"chunks yielded {seen} rows, {self.n_rows} declared")


def chunk_ranges(n: int, size: int = 0) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)`` in steps of ``size`` (default CHUNK_FRAMES)."""
    size = max(1, int(size or CHUNK_FRAMES))
    for i in range(0, int(n), size):
        yield i, min(int(n), i + size)


def materialize(data: Any) -> np.ndarray:
    """The whole array: ``data`` itself, or a :class:`RowChunks` concatenated (for tests and
    in-process callers that want the array; the runner never does this)."""
    if not isinstance(data, RowChunks):
        return np.asarray(data)
    parts = list(data)
    if not parts:
        return np.zeros(data.shape, data.dtype)
    return np.concatenate(parts, axis=0)


def n_rows(data: Any) -> int:
    """Rows of ``data`` (0 for a scalar) without materialising a :class:`RowChunks`."""
    if isinstance(data, RowChunks):
        return data.n_rows
    a = np.asarray(data)
    return int(a.shape[0]) if a.ndim else 0


def dense(result: Any) -> Any:
    """A copy of a StageResult whose ``data`` is the whole array (tests, in-process callers)."""
    import dataclasses

    return dataclasses.replace(result, data=materialize(result.data))
