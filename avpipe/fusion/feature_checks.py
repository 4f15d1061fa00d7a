"""A shard is input like any other: check it before the trainer trusts it.

Why: the trainer reads features through the cache's read API, and a shard can be damaged
(truncated on a full disk) or crafted (a file dropped into ``shards/``, or bytes changed after
the commit). Before this check a shard declaring shape ``(n, 4e6)`` got ``train`` OOM-killed, one
full of NaN trained to "val CCC nan" with exit 0, and a truncated one surfaced as a raw HDF5
error naming no video. :func:`read_checked` looks at the dataset's header first — row count
against what the index recorded when the entry was committed, numeric dtype, a row width equal to
the other videos of the same feature, a size that fits in memory — then reads it, and masks rows
holding NaN/inf (with a count), so one bad entry is one clear :class:`FeatureError`.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from avpipe.fusion.source import FeatureError

_FIX = "run `avpipe cache verify` (it drops damaged entries) and `avpipe extract` to recompute them"


def memory_limit_bytes() -> int:
    """Half the memory available now: a larger single entry cannot be right (an hour of 512-d
    float32 features at 25 fps is 184 MB)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def read_checked(entry: Any, stage: str, fingerprint: str, video: str, index_rows: int | None,
                 widths: dict[tuple[str, str], tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """``(data, mask)`` of a :class:`~avpipe.pipeline.entry.ShardEntry`, checked (see the module
    docstring). ``widths`` remembers each feature's row shape across calls."""
    what = f"{stage} features of video {video!r} (shard {entry.shard})"
    try:
        import h5py

        with h5py.File(entry.shard, "r") as h5:
            g = h5[entry.content_id]
            ds = g["data"]
            shape, dtype = tuple(ds.shape), ds.dtype
            mshape = tuple(g["mask"].shape) if "mask" in g else None
    except Exception as ex:  # noqa: BLE001 - any failure to open means damaged
        raise FeatureError(f"{what} cannot be read ({type(ex).__name__}: {ex}): the shard is damaged or "
                           f"truncated; {_FIX}") from ex
    rows = shape[0] if shape else 0
    if dtype.kind not in "fiub":
        raise FeatureError(f"{what} hold {dtype} values, not numbers: not a feature this trainer can use")
    if index_rows is not None and rows != index_rows:
        raise FeatureError(f"{what} declare {rows} rows but the index recorded {index_rows} when the entry "
                           f"was written: the shard was changed or crafted; {_FIX}")
    if mshape is not None and mshape != (rows,):
        raise FeatureError(f"{what}: mask shape {mshape} does not match {rows} rows; {_FIX}")
    need = math.prod(shape) * dtype.itemsize
    if need > memory_limit_bytes():
        raise FeatureError(f"{what} declare shape {shape} ({need / 2**30:.1f} GiB), more than half the "
                           "memory available: refusing to read it (crafted or damaged shard?)")
    key = (stage, fingerprint)
    if need and shape[1:] != widths.setdefault(key, shape[1:]):  # an empty entry ("no audio") is data
        raise FeatureError(f"{what} have rows of shape {shape[1:]}, other videos of this feature "
                           f"{widths[key]}: the shard was changed or crafted; {_FIX}")
    try:
        data, mask = np.asarray(entry.data), np.asarray(entry.mask, dtype=bool)
    except Exception as ex:  # noqa: BLE001 - truncated chunks show up only when read
        raise FeatureError(f"{what} cannot be read ({type(ex).__name__}: {ex}): the shard is damaged or "
                           f"truncated; {_FIX}") from ex
    if data.dtype.kind == "f" and data.size:
        bad = ~np.isfinite(data.reshape(rows, -1)).all(axis=1) if rows else np.zeros(0, bool)
        n_bad = int(bad.sum())
        if n_bad:
            data = data.copy()
            data[bad] = 0
            mask = mask & ~bad
            warnings.warn(f"{what}: {n_bad} of {rows} row(s) hold NaN/inf values and are masked", stacklevel=2)
    return data, mask
