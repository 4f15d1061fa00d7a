"""How an entry stores one track per person: the names, dtypes and shapes of the per-person outputs.

A stage that knows about people (``faces``, ``visual``, the crop-tree ingest) stores, beside its
main-face rows, every person's rows with a leading track axis; readers (the trainer's person
binding, ``render``) read them back. Both sides use this module, so a name or a dtype is spelled
once. It is pure storage layout (numpy only): extractors, fusion and the command line all import
it without importing each other.

Stored per entry (``T`` tracks, ``n`` rows):

* extras ``track_ids`` (T,) int64 — each track's id (the ids ``faces`` gave, not 0..T-1);
  ``track_data`` (T, n, ...) rows shaped as the entry's ``data`` row; ``track_mask`` (T, n) bool;
  ``track_crops`` (T, n, S, S, 3) uint8 — only ``faces``-shaped entries, only with T >= 2;
* attrs ``tracks`` (one summary dict per track: ``id``, ``frames``, ``first``, ``last``, ...) and
  ``sides`` (``{"left": id, "right": id}``, or ``{}`` with fewer than two people). An entry with a
  ``sides`` attr is *person-aware*: its rows differ per person.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

TRACK_IDS = "track_ids"
TRACK_DATA = "track_data"
TRACK_MASK = "track_mask"
TRACK_CROPS = "track_crops"
TRACKS_ATTR = "tracks"
SIDES_ATTR = "sides"

ID_DTYPE = np.int64
MASK_DTYPE = np.bool_
CROP_DTYPE = np.uint8


# ----------------------------------------------------------------------------- writing
def track_extras(ids: Any, data: Any, mask: Any) -> dict[str, Any]:
    """The per-person extras of a stage's result, in their stored dtypes.

    ``data`` is passed through untouched (an array in the stage's row dtype, or a lazily written
    :class:`~avpipe.pipeline.chunks.BlockArray`); ``ids`` and ``mask`` are copied, so the result
    does not alias arrays the caller keeps changing."""
    return {TRACK_IDS: np.array(ids, ID_DTYPE).reshape(-1), TRACK_DATA: data,
            TRACK_MASK: np.array(mask, MASK_DTYPE)}


def person_attrs(tracks: list[dict[str, Any]], sides: Mapping[str, int]) -> dict[str, Any]:
    """The per-person attrs (``tracks``, ``sides``)."""
    return {TRACKS_ATTR: list(tracks), SIDES_ATTR: dict(sides)}


def copied_person_attrs(upstream: Mapping[str, Any]) -> dict[str, Any]:
    """The per-person attrs of the entry a stage reads (a stage derived from ``faces`` keeps its
    people, so a reader binds ``_left``/``_right`` labels from that entry alone)."""
    return person_attrs(list(upstream.get(TRACKS_ATTR, [])), dict(upstream.get(SIDES_ATTR, {})))


# ----------------------------------------------------------------------------- reading
def is_person_aware(attrs: Mapping[str, Any]) -> bool:
    """Whether an entry holds per-person tracks (its rows differ per person)."""
    return SIDES_ATTR in attrs


def has_tracks(extras: Collection[str]) -> bool:
    """Whether an entry's extras hold per-person rows (``track_data`` and ``track_mask``)."""
    return TRACK_DATA in extras and TRACK_MASK in extras


def read_sides(attrs: Mapping[str, Any]) -> dict[str, int]:
    """``{"left": id, "right": id}`` (``{}``: none bound)."""
    return {str(k): int(v) for k, v in dict(attrs.get(SIDES_ATTR) or {}).items()}


def read_track_ids(extra: Callable[[str], Any]) -> list[int]:
    """The stored track ids, in track-axis order ([] when the entry stores no tracks: a video
    without faces). ``extra(name)`` reads one extra and raises KeyError for a missing one."""
    try:
        return [int(i) for i in np.asarray(extra(TRACK_IDS)).reshape(-1)]
    except KeyError:
        return []


def read_track(extra: Callable[[str], Any], row: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n, ...), mask (n,) bool) of the track at position ``row`` of the track axis."""
    return np.asarray(extra(TRACK_DATA)[row]), np.asarray(extra(TRACK_MASK)[row], MASK_DTYPE)


@dataclass
class PersonTracks:
    """Every person's rows of one entry, read back whole: ``data`` (T, n, ...), ``mask`` (T, n)."""

    ids: list[int]
    data: np.ndarray
    mask: np.ndarray
    sides: dict[str, int]

    def side_of(self, track_id: int) -> str | None:
        """The side (``left``/``right``) bound to ``track_id``, or None."""
        return next((s for s, t in self.sides.items() if t == track_id), None)


def read_tracks(extras: Collection[str], extra: Callable[[str], Any], attrs: Mapping[str, Any],
                dtype: Any = None) -> PersonTracks | None:
    """The entry's per-person rows (None when it stores none). Entries written before track ids
    were stored number their tracks 0..T-1."""
    if not has_tracks(extras):
        return None
    data = np.asarray(extra(TRACK_DATA), dtype)
    ids = read_track_ids(extra) if TRACK_IDS in extras else list(range(len(data)))
    return PersonTracks(ids, data, np.asarray(extra(TRACK_MASK), MASK_DTYPE), read_sides(attrs))
