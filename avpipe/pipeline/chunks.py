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

Stages whose per-frame outputs all come out of one pass over the frames (``faces``: boxes,
landmarks, crops and the face-found mask from one decode) declare further ``columns``: then
``gen`` yields dicts ``{"data": chunk, "mask": chunk, "<extra>": chunk, ...}`` and the writer
appends each to its dataset (``mask``, ``extras/<name>``) in the same pass — no column is ever
whole in memory. Such a result leaves ``StageResult.mask`` None and does not repeat the columns in
``StageResult.extras``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    make: Callable[[], Iterator[Any]]
    # further per-frame columns from the same pass: name -> (row shape, dtype); "mask" is the mask
    columns: dict[str, tuple[tuple[int, ...], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_rows = int(self.n_rows)
        self.row_shape = tuple(int(s) for s in self.row_shape)
        self.dtype = np.dtype(self.dtype)
        self.columns = {str(k): (tuple(int(s) for s in shp), np.dtype(dt)) for k, (shp, dt) in self.columns.items()}
        if "data" in self.columns:
            raise ValueError("'data' is the main column; name the other columns otherwise")
        if "mask" in self.columns and self.columns["mask"] != ((), np.dtype(bool)):
            raise ValueError("the 'mask' column must be scalar bool rows")

    def specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Every column's (row shape, dtype), ``data`` first."""
        return {"data": (self.row_shape, self.dtype), **self.columns}

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_rows,) + self.row_shape

    def __len__(self) -> int:
        return self.n_rows

    def iter_columns(self) -> Iterator[dict[str, np.ndarray]]:
        """The chunks as ``{column: chunk}``, each checked against the declared row shapes and
        dtypes; a stage that yields more or fewer rows than it declared fails here rather than
        writing a short entry."""
        specs = self.specs()
        seen = 0
        for c in self.make():
            cols = dict(c) if self.columns else {"data": c}
            if set(cols) != set(specs):
                raise ValueError(f"chunk has columns {sorted(cols)}, declared {sorted(specs)}")
            k = None
            for name, (shape, dtype) in specs.items():
                a = cols[name] = np.asarray(cols[name])
                if a.shape[1:] != shape or a.dtype != dtype:
                    raise ValueError(f"chunk of {name!r} has shape {a.shape} {a.dtype}, declared rows "
                                     f"{shape} {dtype}")
                if k is not None and len(a) != k:
                    raise ValueError(f"chunk columns differ in length ({name!r}: {len(a)}, data: {k})")
                k = len(a)
            seen += int(k or 0)
            if seen > self.n_rows:
                raise ValueError(f"chunks yield more than the declared {self.n_rows} rows")
            yield cols
        if seen != self.n_rows:
            raise ValueError(f"chunks yielded {seen} rows, {self.n_rows} declared")

    def __iter__(self) -> Iterator[np.ndarray]:
        """The ``data`` chunks (checked as in :meth:`iter_columns`)."""
        for cols in self.iter_columns():
            yield cols["data"]

    def materialize_columns(self) -> dict[str, np.ndarray]:
        """Every column whole (tests, in-process callers)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.specs()}
        for cols in self.iter_columns():
            for k, a in cols.items():
                parts[k].append(a)
        return {k: (np.concatenate(v, axis=0) if v else np.zeros((0,) + shp, dt))
                for (k, v), (shp, dt) in zip(parts.items(), self.specs().values())}


@dataclass
class BlockArray:
    """An extra of ``shape`` written block by block: ``make()`` yields ``(key, block)`` with
    ``array[key] = block`` (``key`` a tuple of ints/slices), blocks not overlapping.

    Why: an extra with a leading axis that is not the frame axis (``faces``' ``track_crops``,
    ``(tracks, frames, S, S, 3)``) cannot be a :class:`RowChunks` column, and whole it is
    gigabytes per hour. The writer stores it chunked along ``row_axis`` (the frame axis), one
    chunk never spanning two entries of the axes before it, so only a block is ever in memory
    and a frame range of one track reads a few chunks. ``np.asarray`` gives the whole array.
    """

    shape: tuple[int, ...]
    dtype: Any
    make: Callable[[], Iterator[tuple[tuple[Any, ...], np.ndarray]]]
    row_axis: int = 1

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.dtype = np.dtype(self.dtype)
        if not 0 <= self.row_axis < len(self.shape):
            raise ValueError(f"row_axis {self.row_axis} is outside shape {self.shape}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def blocks(self) -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
        """The blocks, checked: dtype as declared and, at the end, as many elements as the
        shape holds (a generator that stops early fails here, not as a short entry)."""
        seen = 0
        for key, block in self.make():
            block = np.asarray(block)
            if block.dtype != self.dtype:
                raise ValueError(f"block of dtype {block.dtype}, declared {self.dtype}")
            seen += int(block.size)
            yield key, block
        if seen != self.size:
            raise ValueError(f"blocks cover {seen} elements, shape {self.shape} holds {self.size}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.zeros(self.shape, self.dtype)
        for key, block in self.blocks():
            out[key] = block
        return out if dtype is None else out.astype(dtype)


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
    return data.materialize_columns()["data"]


def n_rows(data: Any) -> int:
    """Rows of ``data`` (0 for a scalar) without materialising a :class:`RowChunks`."""
    if isinstance(data, RowChunks):
        return data.n_rows
    a = np.asarray(data)
    return int(a.shape[0]) if a.ndim else 0


def dense(result: Any) -> Any:
    """A copy of a StageResult whose ``data`` (and columns: ``mask``, extras) are whole arrays
    (tests, in-process callers)."""
    import dataclasses

    if not isinstance(result.data, RowChunks):
        extras = {k: np.asarray(v) if isinstance(v, BlockArray) else v for k, v in result.extras.items()}
        return dataclasses.replace(result, extras=extras)
    cols = result.data.materialize_columns()
    mask = cols.pop("mask", result.mask)
    data = cols.pop("data")
    # after the rows: a generator may complete the extras (and attrs) when it finishes
    extras = {k: np.asarray(v) if isinstance(v, BlockArray) else v for k, v in result.extras.items()}
    return dataclasses.replace(result, data=data, mask=mask, extras={**extras, **cols})
