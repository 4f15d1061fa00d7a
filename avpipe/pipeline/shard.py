"""HDF5 shard layout: how one stage's results for several videos live in one file.

Layout of a shard (one file, written by exactly one worker, then renamed into place)::

    /<content_id>/               group per video; attrs: stage, version, fingerprint, content_id,
                                 config_json, weights_id, avpipe_version, attrs_json,
                                 packages_json (numerics package versions that computed it)
    /<content_id>/data           (frames, dim) for per-frame stages; chunked along time, gzip
                                 (a :class:`~avpipe.pipeline.chunks.RowChunks` is appended
                                 chunk by chunk into the same layout)
    /<content_id>/mask           (frames,) bool, True = valid row           (absent = all valid)
    /<content_id>/extras/<name>  any further array; 1-D str arrays are variable-length UTF-8

Plain h5py reads it: ``h5py.File(shard)[content_id]["data"][:]``. Readers must go through the
index (see store.py) to learn *which* shard holds a complete entry; a file on disk proves nothing.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.chunks import BlockArray, RowChunks
from avpipe.pipeline.types import StageResult

STR_DTYPE_KIND = ("U", "O", "T")


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...] | None:
    """Chunk along time (axis 0) so a window read touches few chunks; ~256 KiB per chunk."""
    if len(shape) == 0 or shape[0] == 0:
        return None
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    rows = int(max(1, min(shape[0], (256 * 1024) // row)))
    return (rows,) + tuple(int(s) for s in shape[1:])


def _write_array(group: Any, name: str, arr: np.ndarray) -> None:
    import h5py

    arr = np.asarray(arr)
    if arr.dtype.kind in STR_DTYPE_KIND:
        group.create_dataset(name, data=[str(s) for s in arr.reshape(-1)],
                             dtype=h5py.string_dtype("utf-8"))
        return
    kwargs: dict[str, Any] = {}
    if arr.ndim >= 1 and arr.size > 0:
        kwargs = {"chunks": _chunks(arr.shape, arr.dtype.itemsize), "compression": "gzip",
                  "compression_opts": 4, "shuffle": True}
    group.create_dataset(name, data=arr, **kwargs)


def _create_rows(group: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, *, plain: bool = False) -> Any:
    """An empty dataset of the final shape, laid out as :func:`_write_array` (or, ``plain``, as
    the mask's plain ``create_dataset``) lays out the whole array; None when it has no elements."""
    if int(np.prod(shape, dtype=np.int64)) == 0:
        group.create_dataset(name, data=np.zeros(shape, dtype))
        return None
    if plain:
        return group.create_dataset(name, shape=shape, dtype=dtype)
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=_chunks(shape, dtype.itemsize),
                                compression="gzip", compression_opts=4, shuffle=True)


def _write_row_chunks(group: Any, rows: RowChunks) -> None:
    """Append ``rows`` (``data`` and its columns: ``mask``, ``extras/<name>``) chunk by chunk into
    datasets of the final shape, each laid out as the whole array would be, so the stored entry
    is the same; only one chunk is ever in memory."""
    sets: dict[str, Any] = {}
    for name, (shape, dtype) in rows.specs().items():
        where = group.require_group("extras") if name not in ("data", "mask") else group
        sets[name] = _create_rows(where, name, (rows.n_rows,) + shape, dtype, plain=name == "mask")
    at = 0
    for cols in rows.iter_columns():  # also runs (and checks) the generator when nothing is stored
        k = len(cols["data"])
        for name, c in cols.items():
            if sets[name] is not None and k:
                sets[name][at:at + k] = c
        at += k


def write_result(h5: Any, content_id: str, result: StageResult, provenance: Mapping[str, Any]) -> None:
    """Write one video's result as group ``content_id`` into an open (temporary) shard."""
    if content_id in h5:
        del h5[content_id]
    g = h5.create_group(content_id)
    for k, v in provenance.items():
        g.attrs[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v, sort_keys=True)
    if isinstance(result.data, RowChunks):
        if result.mask is not None and "mask" in result.data.columns:
            raise ValueError("the mask is given twice (StageResult.mask and a 'mask' column)")
        if set(result.extras) & set(result.data.columns):
            raise ValueError(f"extras {sorted(set(result.extras) & set(result.data.columns))} are "
                             "also chunk columns")
        _write_row_chunks(g, result.data)
    else:
        _write_array(g, "data", np.asarray(result.data))
    if result.mask is not None:
        g.create_dataset("mask", data=np.asarray(result.mask, dtype=bool))
    if result.extras:
        eg = g.require_group("extras")
        for name, arr in result.extras.items():
            if isinstance(arr, BlockArray):
                _write_blocks(eg, name, arr)
            else:
                _write_array(eg, name, arr)
    # last: a RowChunks generator may complete attrs (counts known at the end) as it finishes
    g.attrs["attrs_json"] = json.dumps(result.attrs, sort_keys=True, default=_json_default)


def _write_blocks(group: Any, name: str, arr: BlockArray) -> None:
    """A :class:`BlockArray` extra, chunked along its frame axis (one chunk per leading index),
    written block by block."""
    ax = arr.row_axis
    if arr.size == 0:
        group.create_dataset(name, data=np.zeros(arr.shape, arr.dtype))
        return
    rows = _chunks(arr.shape[ax:], arr.dtype.itemsize)
    ds = group.create_dataset(name, shape=arr.shape, dtype=arr.dtype, chunks=(1,) * ax + rows,  # type: ignore[operator]
                              compression="gzip", compression_opts=4, shuffle=True)
    for key, block in arr.blocks():
        ds[key] = block


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"attrs value of type {type(o).__name__} is not JSON-able")


def read_array(ds: Any) -> np.ndarray:
    """Read a dataset; variable-length strings come back as an object array of str."""
    import h5py

    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.array(ds.asstr()[()], dtype=object)
    return ds[()]


def group_packages(group: Any) -> dict[str, str] | None:
    """The numerics package versions an entry was computed with; None for entries written
    before avpipe recorded them."""
    raw = group.attrs.get("packages_json")
    if raw is None:
        return None
    return json.loads(raw if isinstance(raw, str) else raw.decode())


def group_attrs(group: Any) -> dict[str, Any]:
    raw = group.attrs.get("attrs_json", "{}")
    return json.loads(raw if isinstance(raw, str) else raw.decode())
