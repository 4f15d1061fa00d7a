"""Which person's features a label track reads: Aff-Wild2's ``X_left`` / ``X_right``.

A video annotated for two people has two label files, ``X_left`` and ``X_right``. Their face
features must come from *that* person, not from the video's main face (which is one of the two).
Stages that know about people (``faces``, ``visual``) store every person's track as extras and a
``sides`` attr (``{"left": track id, "right": track id}``, bound by
:func:`avpipe.extractors.tracking.bind_sides`, or by the crop-folder names for the organisers'
crops). Stages without a ``sides`` attr (audio, text) are shared by both people.

A label that names a side the video has no track for is an error for that label
(:class:`PersonTrackError`): silently reading the main face would train one person on the other
person's face.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from avpipe.fusion.source import FeatureError
from avpipe.pipeline.person_tracks import (TRACK_DATA, TRACK_IDS, TRACK_MASK, TRACKS_ATTR, is_person_aware,
                                           read_sides, read_track, read_track_ids)

SIDES = ("left", "right")


class PersonTrackError(FeatureError):
    """A label names a person (side) the video's cached features have no track for."""


def person_side(label_name: str) -> str | None:
    """``"left"``/``"right"`` for ``X_left``/``X_right`` (any path prefix), else None."""
    stem = label_name.rsplit("/", 1)[-1]
    for side in SIDES:
        suffix = f"_{side}"
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return side
    return None


def track_id_of(person: str | int | None) -> int | None:
    """The face track id ``person`` names (an int, or digits as text), or None for a side name.

    Why: a side (``left``/``right``) covers two people; a track id reaches any face track of a
    video (``attrs["tracks"]`` lists them), e.g. the third person of a group scene."""
    if isinstance(person, bool) or person is None:
        return None
    if isinstance(person, (int, np.integer)):
        return int(person)
    s = str(person).strip()
    return int(s) if s.isdigit() else None


def reads_faces(stage: str, provenance: Mapping[str, Any]) -> bool:
    """Whether an entry is made from faces (the ``faces`` stage or one reading it): such an entry
    without a ``sides`` attr predates person tracks, and its rows are the main face's."""
    import json

    up = provenance.get("upstream_json") or "{}"
    try:
        return stage == "faces" or "faces" in json.loads(up)
    except (TypeError, ValueError):
        return stage == "faces"


def select_person(data: np.ndarray, mask: np.ndarray, attrs: Mapping[str, Any],
                  extra: Callable[[str], np.ndarray], person: str | int, *, stage: str,
                  video: str, provenance: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``person``'s track of a person-aware entry (``data``/``mask`` unchanged if the
    entry is not person-aware and not made from faces, e.g. audio). Raises
    :class:`PersonTrackError` when there is no such track, or when a face entry predates tracks."""
    r = person_row(attrs, extra, person, stage=stage, video=video, provenance=provenance)
    if r is None:
        return data, mask
    return read_track(extra, r)


def person_row(attrs: Mapping[str, Any], extra: Callable[[str], np.ndarray], person: str | int, *, stage: str,
               video: str, provenance: Mapping[str, Any] | None = None) -> int | None:
    """Which row of ``track_data``/``track_mask`` is ``person``'s (None: the entry is shared by
    every person, e.g. audio). Why apart from :func:`select_person`: a reader of one window
    reads only that window's frames of the track (``Entry.extra_rows``)."""
    if not is_person_aware(attrs):
        if reads_faces(stage, provenance or {}):
            raise PersonTrackError(
                f"video {video!r}: the {stage!r} entry has no person tracks (computed before avpipe kept "
                f"one track per person, so its rows are the main face's); re-extract it: "
                f"avpipe extract --stages {stage}")
        return None
    sides = read_sides(attrs)
    tracks = attrs.get(TRACKS_ATTR) or []
    tid_asked = track_id_of(person)
    if tid_asked is not None:  # a track id names one face track directly (any number of people)
        ids = read_track_ids(extra)
        if tid_asked not in ids:
            raise PersonTrackError(f"video {video!r}: stage {stage!r} has no face track {tid_asked} "
                                   f"(tracks {ids})")
        return ids.index(tid_asked)
    if person not in SIDES:
        raise PersonTrackError(f"unknown person {person!r}; use one of {SIDES} or a track id")
    if person not in sides:
        raise PersonTrackError(
            f"video {video!r}: stage {stage!r} has no {person} person track (found {len(tracks)} face "
            f"track(s); a {person} side needs two people: the two longest tracks, ordered by median "
            f"box-centre x). Check the video, or drop the label")
    tid = int(sides[person])
    ids = read_track_ids(extra)
    if tid not in ids:
        raise PersonTrackError(f"video {video!r}: stage {stage!r} binds {person} to track {tid}, "
                               f"which is not stored (tracks {ids})")
    return ids.index(tid)


def main_face_people(data: np.ndarray, mask: np.ndarray, attrs: Mapping[str, Any],
                     extra: Callable[[str], np.ndarray], rtol: float = 1e-2) -> np.ndarray:
    """Which person's track each main-face row is: the track id, or -1 (no face, no track close).

    The main-face view follows whoever the detector keeps (:mod:`avpipe.extractors.faces`); when
    that person is lost it takes whoever is there. Each valid main row equals (faces) or nearly
    equals (embeddings: another batch) one track's row at that frame; the closest within ``rtol``
    of the row's norm names the person."""
    ids = np.asarray(extra(TRACK_IDS)).reshape(-1).astype(int)
    td, tm = np.asarray(extra(TRACK_DATA)), np.asarray(extra(TRACK_MASK), bool)
    n = len(mask)
    flat = np.asarray(data, np.float64).reshape(n, -1)
    best = np.full(n, np.inf)
    who = np.full(n, -1)
    for k in range(len(ids)):
        dk = np.linalg.norm(np.asarray(td[k], np.float64).reshape(n, -1) - flat, axis=1)
        dk[~tm[k][:n]] = np.inf
        better = dk < best
        best[better], who[better] = dk[better], ids[k]
    close = best <= rtol * (np.linalg.norm(flat, axis=1) + 1e-6)
    return np.where(np.asarray(mask, bool) & close, who, -1)


def person_changes(who: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(last frame of A, A, first frame of B, B)`` for each change of person in ``who``
    (frames of nobody in between do not count as a person)."""
    out = []
    last_id, last_f = -1, -1
    for f in np.flatnonzero(who >= 0):
        p = int(who[f])
        if last_id >= 0 and p != last_id:
            out.append((last_f, last_id, int(f), p))
        last_id, last_f = p, int(f)
    return out


def main_face_switch_message(video: str, stage: str, changes: list[tuple[int, int, int, int]]) -> str:
    a_end, a, b_start, b = changes[0]
    more = f" ({len(changes)} changes in all)" if len(changes) > 1 else ""
    return (f"video {video!r}: an unsided label reads the main face of stage {stage!r}, which changes person: "
            f"track {a} until frame {a_end}, then track {b} from frame {b_start}{more}; one label would train "
            f"on two people. Name the label file X_left/X_right to read one person's track "
            f"(avpipe inspect lists the tracks)")
