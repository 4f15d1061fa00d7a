"""Read-side view of one cache entry (stage fingerprint × content id).

Two implementations share one surface so that stages, the trainer and tests do not care where an
entry comes from: :class:`ShardEntry` reads lazily from an HDF5 shard named by the index,
:class:`MemoryEntry` wraps a fresh :class:`StageResult` (tests, and stages fed in-process).
"""
from __future__ import annotations

from functools import cached_property
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.shard import group_attrs, group_packages, read_array
from avpipe.pipeline.types import StageResult


class Entry:
    """One stage's output for one video.

    * ``data`` — the main array (``(n_frames, dim)`` for per-frame stages);
    * ``mask`` — ``(len(data),)`` bool, all True when the stage stored none;
    * ``attrs`` — the stage's JSON attrs (window convention, ``present`` ...);
    * ``extras`` / ``extra(name)`` — further arrays;
    * ``timestamps`` — seconds of video time of each *row* of ``data``, when known: the frame
      times for per-frame stages, ``i / sample_rate`` for ``audio``, each word's start for
      ``asr`` (the stage's ``row_times``); ``frame_times`` — the video's frame times (the
      probe's time base) the entry was read with;
    * ``read_rows(start, stop)`` — a slice of ``data`` without reading the rest (HDF5 chunks);
    * ``extra_rows(name, start, stop, lead)`` — frames ``start:stop`` of an extra (under the
      leading index ``lead``, e.g. one track of ``track_crops``), likewise; ``extra_at(name,
      rows)`` — any rows of an extra, in the order asked, likewise; ``extra_shape`` and
      ``extra_chunks`` say how big it is and how it is stored, without reading it.
    """

    stage: str
    fingerprint: str
    content_id: str
    key: str | None

    @property
    def data(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def mask(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @property
    def attrs(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    @property
    def extras(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def extra(self, name: str) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def read_rows(self, start: int, stop: int | None) -> np.ndarray:
        return self.data[start:stop]

    def extra_rows(self, name: str, start: int, stop: int, lead: tuple[int, ...] = ()) -> np.ndarray:
        """``extra(name)[lead + (slice(start, stop),)]``; a shard reads only those HDF5 chunks.
        Why: a reader of an hour's face crops (≈ 4 GB) must not hold them all at once."""
        return np.asarray(self.extra(name)[tuple(lead) + (slice(int(start), int(stop)),)])

    def extra_at(self, name: str, rows: Sequence[int]) -> np.ndarray:
        """``extra(name)[rows]`` (rows in the order given, repeats allowed); a shard reads only
        those rows. Why: a viewer wants a few scattered frames' crops of an hour-long video."""
        return np.asarray(self.extra(name))[np.asarray(rows, np.int64)]

    def extra_shape(self, name: str) -> tuple[int, ...]:
        return tuple(np.shape(self.extra(name)))

    def extra_chunks(self, name: str) -> tuple[int, ...] | None:
        """The stored chunk shape of an extra (None: not chunked, or not from a shard). A
        reader sizes its reads so that a range never re-decompresses the same chunk."""
        return None

    frame_times: np.ndarray | None = None

    @property
    def timestamps(self) -> np.ndarray | None:
        """One time (seconds) per row of ``data``; computed on access (an hour of audio samples
        is 460 MB of float64, never built unless asked for)."""
        if self.frame_times is None and self.stage != "probe":
            return None
        from avpipe.pipeline.stage import get_stage_class

        try:
            cls = get_stage_class(self.stage)
        except KeyError:  # a stage not registered in this process: per-frame if the rows say so
            n = np.shape(self.data)[0] if np.ndim(self.data) else 0
            return self.frame_times if self.frame_times is not None and n == len(self.frame_times) else None
        return cls.row_times(self, self.frame_times)

    @property
    def present(self) -> bool:
        """False where the stage recorded absence (e.g. no audio stream)."""
        return bool(self.attrs.get("present", True))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.stage}@{self.fingerprint[:12]} {self.key or self.content_id[:12]}>"


class MemoryEntry(Entry):
    def __init__(self, result: StageResult, *, stage: str = "", fingerprint: str = "",
                 content_id: str = "", key: str | None = None,
                 timestamps: np.ndarray | None = None) -> None:
        self._r = result
        self.stage, self.fingerprint, self.content_id, self.key = stage, fingerprint, content_id, key
        self.frame_times = timestamps

    @property
    def data(self) -> np.ndarray:
        return np.asarray(self._r.data)

    @property
    def mask(self) -> np.ndarray:
        if self._r.mask is None:
            return np.ones(len(self._r.data) if np.ndim(self._r.data) else 0, dtype=bool)
        return np.asarray(self._r.mask, dtype=bool)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._r.attrs)

    @property
    def extras(self) -> list[str]:
        return sorted(self._r.extras)

    def extra(self, name: str) -> np.ndarray:
        if name not in self._r.extras:
            raise KeyError(f"{self.stage}: no extra {name!r}; have {self.extras}")
        return np.asarray(self._r.extras[name])


class ShardEntry(Entry):
    """Lazily reads group ``content_id`` of ``shard``. Opens the file per access (read-only),
    so entries can be held cheaply and passed between processes by value."""

    def __init__(self, shard: Path, *, stage: str, fingerprint: str, content_id: str,
                 key: str | None = None, timestamps: np.ndarray | None = None) -> None:
        self.shard = Path(shard)
        self.stage, self.fingerprint, self.content_id, self.key = stage, fingerprint, content_id, key
        self.frame_times = timestamps

    def _open(self) -> Any:
        import h5py

        return h5py.File(self.shard, "r")

    @cached_property
    def data(self) -> np.ndarray:  # type: ignore[override]
        with self._open() as h5:
            return read_array(h5[self.content_id]["data"])

    @cached_property
    def mask(self) -> np.ndarray:  # type: ignore[override]
        with self._open() as h5:
            g = h5[self.content_id]
            if "mask" in g:
                return g["mask"][()].astype(bool)
            n = g["data"].shape[0] if g["data"].ndim else 0
            return np.ones(n, dtype=bool)

    @cached_property
    def attrs(self) -> dict[str, Any]:  # type: ignore[override]
        with self._open() as h5:
            return group_attrs(h5[self.content_id])

    @cached_property
    def packages(self) -> dict[str, str] | None:
        """Numerics package versions this entry was computed with (None: not recorded)."""
        with self._open() as h5:
            return group_packages(h5[self.content_id])

    @cached_property
    def extras(self) -> list[str]:  # type: ignore[override]
        with self._open() as h5:
            g = h5[self.content_id]
            return sorted(g["extras"].keys()) if "extras" in g else []

    def extra(self, name: str) -> np.ndarray:
        with self._open() as h5:
            g = h5[self.content_id]
            if "extras" not in g or name not in g["extras"]:
                raise KeyError(f"{self.stage}: no extra {name!r} for {self.key or self.content_id}")
            return read_array(g["extras"][name])

    def _extra_ds(self, h5: Any, name: str) -> Any:
        g = h5[self.content_id]
        if "extras" not in g or name not in g["extras"]:
            raise KeyError(f"{self.stage}: no extra {name!r} for {self.key or self.content_id}")
        return g["extras"][name]

    def extra_rows(self, name: str, start: int, stop: int, lead: tuple[int, ...] = ()) -> np.ndarray:
        import h5py

        with self._open() as h5:
            ds = self._extra_ds(h5, name)
            if h5py.check_string_dtype(ds.dtype) is not None:
                ds = ds.asstr()
            return np.asarray(ds[tuple(lead) + (slice(int(start), int(stop)),)])

    def extra_at(self, name: str, rows: Sequence[int]) -> np.ndarray:
        import h5py

        want = np.asarray(rows, np.int64).reshape(-1)
        with self._open() as h5:
            ds = self._extra_ds(h5, name)
            if h5py.check_string_dtype(ds.dtype) is not None:
                ds = ds.asstr()
            n = ds.shape[0]
            if not want.size:
                return np.zeros((0, *ds.shape[1:]), ds.dtype)
            if want.min() < -n or want.max() >= n:
                raise IndexError(f"{self.stage}: extra {name!r} has {n} rows; asked for rows "
                                 f"{int(want.min())}..{int(want.max())}")
            # HDF5 point reads need increasing rows without repeats; negative rows count from the end
            uniq, back = np.unique(want % n, return_inverse=True)
            return np.asarray(ds[uniq.tolist()])[back]

    def extra_shape(self, name: str) -> tuple[int, ...]:
        with self._open() as h5:
            return tuple(self._extra_ds(h5, name).shape)

    def extra_chunks(self, name: str) -> tuple[int, ...] | None:
        with self._open() as h5:
            ch = self._extra_ds(h5, name).chunks
            return None if ch is None else tuple(ch)

    def release(self) -> None:
        """Drop the arrays read so far (they are read again on the next access). Why: a worker
        keeps a task's input entries until the task ends; without this, every finished video's
        inputs (an hour of waveform is 230 MB) would stay in memory until then."""
        for name in ("data", "mask"):
            self.__dict__.pop(name, None)

    def read_rows(self, start: int, stop: int | None) -> np.ndarray:
        if "data" in self.__dict__:
            return self.__dict__["data"][start:stop]
        with self._open() as h5:
            return h5[self.content_id]["data"][start:stop]
