"""Valence/arousal labels: Aff-Wild2 annotation folders, a plain CSV form, and splits.

Two on-disk forms are read into one in-memory form, :class:`LabelTrack` (one annotated person in
one video: per-frame valence/arousal, ``-5`` = unlabelled, kept as a boolean ``valid`` mask):

* **Aff-Wild2 folders** — one ``<name>.txt`` per annotated person-video, header
  ``valence,arousal``, line *i* (1-based after the header) = video frame *i* (= cache row *i-1*).
  Split sub-folders ``Train_Set/``, ``Validation_Set/`` (and optionally ``Test_Set/``) as in the
  ABAW releases; any other folder layout is read recursively and split with a split file.
* **CSV** — columns ``video,frame,valence,arousal`` (optionally ``split``); ``frame`` is the
  0-based video frame (= cache row). Frames that are not listed are unlabelled.

Video mapping (Aff-Wild2 ``_left``/``_right``): a label named ``X_left`` or ``X_right`` belongs to
the video whose file stem is ``X`` (e.g. ``X.mp4``, ``X.avi``); both tracks read the same cached
features. Any other label name ``Y`` belongs to the video whose stem is ``Y``. A label may also
name the video key itself (``batch2/Y.mp4`` in the CSV form). See :func:`source_video_stem`.

Validation: every value must be a number in [-1, 1] or the ``-5`` marker; a row with the wrong
number of columns, a blank line between rows, a non-numeric or out-of-range value, or a file that
is not text is a :class:`LabelError` naming the file and line (silently accepting ``3.0`` or a
shifted row would train on wrong targets); ``clip=True`` (``train --clip-labels``) clips
out-of-range values into [-1, 1] instead, with one warning per file. NaN/inf values are treated as unlabelled (like ``-5``)
with one warning per file.

Length tolerance: Aff-Wild2 label files are often a few lines longer or shorter than the decoded
video. Within ``tolerance`` frames (default :data:`DEFAULT_TOLERANCE`) the labels are padded with
``-5`` (unlabelled) or truncated; beyond it :class:`LabelLengthError` names the file and both counts
instead of silently shifting labels against frames (``train --label-tolerance N`` raises it).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from avpipe.display import safe_name

UNLABELLED = -5.0
DEFAULT_TOLERANCE = 10
#: Bounds checked before anything is held in memory (why: a row naming frame 2000000000 made a
#: 16 GB array, a 280 MB file was read whole into Python objects). 2**24 frames is over a week of
#: 25 fps video; a label file is far below 512 MiB (all of Aff-Wild2 VA as one CSV is ~150 MB).
MAX_LABEL_FRAMES = 1 << 24
MAX_LABEL_BYTES = 512 << 20
SPLIT_FOLDERS = {"train_set": "train", "validation_set": "val", "valid_set": "val", "val_set": "val",
                 "test_set": "test", "train": "train", "val": "val", "validation": "val",
                 "test": "test"}
SPLITS = ("train", "val", "test")


class LabelError(ValueError):
    """A label file or table that cannot be used as given."""


class LabelLengthError(LabelError):
    """Label length disagrees with the video's frame count beyond the tolerance."""


@dataclass
class LabelTrack:
    """Per-frame VA labels of one annotated person in one video.

    ``name`` is the label file stem (``X_left``); ``video_stem`` the source video's stem (``X``);
    ``values`` is ``(n, 2)`` float32 (valence, arousal) with ``-5`` where unlabelled and ``valid``
    is ``(n,)`` bool (True where both columns are labelled, as RJA's preprocessing does).
    """

    name: str
    video_stem: str
    values: np.ndarray
    split: str | None = None
    source: str = ""

    @property
    def valid(self) -> np.ndarray:
        return np.all(self.values != UNLABELLED, axis=1) & np.all(np.isfinite(self.values), axis=1)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def aligned(self, n_frames: int, tolerance: int = DEFAULT_TOLERANCE) -> np.ndarray:
        """Labels fitted to ``n_frames`` rows: pad with -5 / truncate within ``tolerance``."""
        n = len(self)
        if abs(n - n_frames) > tolerance:
            raise LabelLengthError(
                f"label {self.name!r} ({self.source or 'labels'}) has {n} frames but video "
                f"{self.video_stem!r} has {n_frames} (difference {n - n_frames:+d} exceeds the "
                f"tolerance of {tolerance} frames; raise it with train --label-tolerance N if the offset "
                f"is known to be harmless)")
        if n >= n_frames:
            return self.values[:n_frames].astype(np.float32, copy=True)
        pad = np.full((n_frames - n, 2), UNLABELLED, dtype=np.float32)
        return np.concatenate([self.values.astype(np.float32), pad])


def source_video_stem(label_name: str) -> str:
    """Aff-Wild2 convention: ``X_left``/``X_right`` annotate two people of video ``X``."""
    for suffix in ("_left", "_right"):
        if label_name.endswith(suffix) and len(label_name) > len(suffix):
            return label_name[: -len(suffix)]
    return label_name


def _check_size(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise LabelError(f"{path}: cannot read ({e.strerror})") from e
    if size > MAX_LABEL_BYTES:
        raise LabelError(f"{path}: {size / 2**20:.0f} MiB is more than a label file can be "
                         f"({MAX_LABEL_BYTES >> 20} MiB); split it, or check it is the right file")


def _text_lines(path: Path) -> Iterator[str]:
    """The file's lines (BOM stripped), streamed; a binary or non-UTF-8 file, or one larger than
    :data:`MAX_LABEL_BYTES`, is a :class:`LabelError`."""
    _check_size(path)
    try:
        fh = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise LabelError(f"{path}: cannot read ({e.strerror})") from e

    def lines() -> Iterator[str]:
        with fh:
            try:
                for raw in fh:
                    if "\x00" in raw:
                        raise LabelError(f"{path}: binary file (NUL bytes); labels must be CSV text")
                    yield raw.rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise LabelError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); labels must "
                                 f"be CSV text") from e
            except OSError as e:
                raise LabelError(f"{path}: cannot read ({e.strerror})") from e

    return lines()


def _number(text: str, where: str, line: str | None = None) -> float:
    """A label value. Stricter than ``float``: ``0_1`` (Python reads 1.0) is refused."""
    ctx = f" in {line!r}" if line is not None else ""
    if "_" in text:
        raise LabelError(f"{where}: {text!r} is not a plain number (no '_' separators){ctx}")
    try:
        return float(text)
    except ValueError as e:
        raise LabelError(f"{where}: not a number{ctx or f': {text!r}'}") from e


def _frame(text: str, where: str) -> int:
    """A 0-based frame index, bounded before any array is sized by it."""
    if "_" in text:
        raise LabelError(f"{where}: frame {text!r} is not a plain integer")
    try:
        f = int(text)
    except ValueError as e:
        raise LabelError(f"{where}: frame {text!r} is not an integer ({e})") from e
    if not 0 <= f < MAX_LABEL_FRAMES:
        raise LabelError(f"{where}: frame {f} is outside any video (0 .. {MAX_LABEL_FRAMES - 1})")
    return f


def check_value(v: float, where: str, line: str, clip: bool = False) -> float:
    """One label value: finite values must be in [-1, 1] or the -5 marker (NaN/inf pass: masked).

    ``clip`` (``train --clip-labels``) clips an out-of-range value into [-1, 1] instead."""
    if math.isfinite(v) and v != UNLABELLED and not -1.0 <= v <= 1.0:
        if clip:
            return min(1.0, max(-1.0, v))
        raise LabelError(f"{where}: value {v:g} outside [-1, 1] (and not the -5 'unlabelled' marker) in "
                         f"{line!r}; fix the file, or pass --clip-labels to clip such values")
    return v


def _changed(before: float, after: float) -> bool:
    """Whether clipping changed a value (NaN is never clipped: it is unlabelled, not out of range)."""
    return math.isfinite(before) and before != after


def _warn_clipped(path: Path | str, n: int) -> None:
    if n:
        warnings.warn(f"{safe_name(str(path))}: {n} value(s) outside [-1, 1] clipped (--clip-labels)", stacklevel=3)


def _warn_non_finite(path: Path | str, n: int) -> None:
    if n:
        warnings.warn(f"{safe_name(str(path))}: {n} row(s) with NaN/inf values are treated as unlabelled (like -5)",
                      stacklevel=3)


def read_affwild2_file(path: Path, clip: bool = False) -> np.ndarray:
    """One Aff-Wild2 VA file → ``(n, 2)`` float32.

    Tolerates a missing header and blank lines at the end; anything else that is not two numbers
    in [-1, 1] (or -5) per line is an error naming the line (line *i* is frame *i*, so a blank or
    extra line would shift every later label against its frame). Streamed into a compact array:
    memory is 8 bytes per row, whatever the file holds."""
    from array import array

    values = array("f")
    non_finite = clipped = 0
    blank_at: int | None = None  # first blank line not yet followed by a row (fine at the end)
    for i, raw in enumerate(_text_lines(path)):
        line = raw.strip()
        if not line:
            blank_at = i if blank_at is None else blank_at
            continue
        if blank_at is not None:
            raise LabelError(f"{path}:{blank_at + 1}: blank line between label rows (line i is frame i: remove "
                             f"it or write -5,-5 for an unlabelled frame)")
        where = f"{path}:{i + 1}"
        parts = [p.strip() for p in line.split(",")]
        if i == 0 and parts[0].lower().startswith("valence"):
            continue
        if len(parts) != 2:
            raise LabelError(f"{where}: expected 2 columns 'valence,arousal', got {len(parts)} in {line!r}")
        if len(values) >= 2 * MAX_LABEL_FRAMES:
            raise LabelError(f"{where}: more than {MAX_LABEL_FRAMES} label rows: not one video's labels")
        v, a = _number(parts[0], where, line), _number(parts[1], where, line)
        cv, ca = check_value(v, where, line, clip), check_value(a, where, line, clip)
        clipped += _changed(v, cv) + _changed(a, ca)
        non_finite += not (math.isfinite(v) and math.isfinite(a))
        values.extend((cv, ca))
    _warn_non_finite(path, non_finite)
    _warn_clipped(path, clipped)
    return np.frombuffer(values, dtype=np.float32).reshape(-1, 2).copy()


def _split_of_folder(parts: Iterable[str]) -> str | None:
    for p in parts:
        s = SPLIT_FOLDERS.get(p.lower())
        if s:
            return s
    return None


def load_affwild2_dir(root: str | Path, clip: bool = False) -> list[LabelTrack]:
    """All ``*.txt`` under ``root``; the split comes from a ``Train_Set``-style parent folder."""
    root = Path(root)
    if not root.is_dir():
        raise LabelError(f"labels folder not found: {root}")
    tracks: list[LabelTrack] = []
    seen: dict[str, Path] = {}
    for p in sorted(root.rglob("*.txt")):
        rel = p.relative_to(root)
        if p.name.startswith(".") or p.stem.lower() in ("readme", "splits", "split"):
            continue
        name = p.stem
        if name in seen:
            raise LabelError(f"label {name!r} appears twice: {seen[name]} and {p}")
        seen[name] = p
        tracks.append(LabelTrack(name=name, video_stem=source_video_stem(name),
                                 values=read_affwild2_file(p, clip), split=_split_of_folder(rel.parts[:-1]),
                                 source=str(p)))
    if not tracks:
        raise LabelError(f"no label files (*.txt) under {root}")
    return tracks


def load_csv(path: str | Path, clip: bool = False) -> list[LabelTrack]:
    """CSV with columns ``video,frame,valence,arousal[,split]``; ``frame`` 0-based."""
    from array import array

    path = Path(path)
    # per video: frames, values and line numbers in compact arrays (not Python tuples per row)
    per: dict[str, tuple[array, array, array]] = {}
    splits: dict[str, str] = {}
    non_finite = clipped = 0
    reader = csv.reader(_text_lines(path))
    header = [h.strip() for h in next(reader, [])]
    need = {"video", "frame", "valence", "arousal"}
    if not need <= set(header):
        raise LabelError(f"{path}: CSV needs columns {sorted(need)}, has {header}")
    for i, cells in enumerate(reader):
        where = f"{path}:{i + 2}"
        if not any(c.strip() for c in cells):
            continue  # csv rows are keyed by (video, frame): a blank line shifts nothing
        if len(cells) != len(header):
            raise LabelError(f"{where}: expected {len(header)} columns {header}, got {len(cells)}: {cells!r}")
        row = dict(zip(header, (c.strip() for c in cells)))
        frame = _frame(row["frame"], where)
        v, a = _number(row["valence"], where), _number(row["arousal"], where)
        cv, ca = check_value(v, where, ",".join(cells), clip), check_value(a, where, ",".join(cells), clip)
        clipped += _changed(v, cv) + _changed(a, ca)
        non_finite += not (math.isfinite(v) and math.isfinite(a))
        fr, va, ln = per.setdefault(row["video"], (array("q"), array("f"), array("q")))
        fr.append(frame)
        va.extend((cv, ca))
        ln.append(i + 2)
        if row.get("split"):
            splits[row["video"]] = _normalise_split(row["split"], where=where)
    _warn_non_finite(path, non_finite)
    _warn_clipped(path, clipped)
    tracks = []
    for video, (fr, va, ln) in per.items():
        frames = np.frombuffer(fr, dtype=np.int64)
        uniq, first, counts = np.unique(frames, return_index=True, return_counts=True)
        if (counts > 1).any():
            f = int(uniq[counts > 1][0])
            lines = np.frombuffer(ln, dtype=np.int64)[frames == f][:2]
            raise LabelError(f"{path}: frame {f} of video {video!r} is listed twice (lines {lines[0]} and "
                             f"{lines[1]}); which value is meant? keep one row per frame")
        vals = np.full((int(frames.max()) + 1, 2), UNLABELLED, dtype=np.float32)
        vals[frames] = np.frombuffer(va, dtype=np.float32).reshape(-1, 2)
        name = PurePosixPath(video).name
        stem = PurePosixPath(name).stem if PurePosixPath(name).suffix else name
        tracks.append(LabelTrack(name=video, video_stem=source_video_stem(stem), values=vals,
                                 split=splits.get(video), source=str(path)))
    return tracks


def load_labels(path: str | Path, clip: bool = False) -> list[LabelTrack]:
    """Dispatch on the form: a folder of Aff-Wild2 files, or one CSV file."""
    p = Path(path)
    if p.is_dir():
        return load_affwild2_dir(p, clip)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return load_csv(p, clip)
    raise LabelError(f"labels must be an Aff-Wild2 folder or a .csv file: {p}")


def _normalise_split(s: str, *, where: str = "") -> str:
    v = SPLIT_FOLDERS.get(s.strip().lower(), s.strip().lower())
    if v not in SPLITS:
        raise LabelError(f"{where}: unknown split {s!r}; use one of {SPLITS}")
    return v


def read_split_file(path: str | Path) -> dict[str, str]:
    """Split file: JSON ``{"train": [names], "val": [...]}`` or lines ``name,split``."""
    p = Path(path)
    text = "\n".join(_text_lines(p))
    out: dict[str, str] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelError(f"{p}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise LabelError(f"{p}: expected a JSON object {{split: [names]}}")
        for split, names in data.items():
            for n in names:
                out[str(n)] = _normalise_split(split, where=str(p))
        return out
    for i, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [x.strip() for x in line.replace("\t", ",").split(",")]
        if len(parts) < 2:
            raise LabelError(f"{p}:{i + 1}: expected 'name,split'")
        if i == 0 and parts[1].lower() == "split":
            continue
        out[parts[0]] = _normalise_split(parts[1], where=f"{p}:{i + 1}")
    return out


def assign_splits(tracks: list[LabelTrack], split_file: str | Path | None = None,
                  val_fraction: float = 0.15, seed: int = 0) -> list[LabelTrack]:
    """Fill ``split`` on every track.

    Priority: the split file (by track name or video stem) > the folder/CSV split > a
    deterministic hash split by *video stem* (so ``_left``/``_right`` of one video never straddle
    train and validation, which would leak the shared audio and face track).
    """
    mapping = read_split_file(split_file) if split_file else {}
    for t in tracks:
        if t.name in mapping:
            t.split = mapping[t.name]
        elif t.video_stem in mapping:
            t.split = mapping[t.video_stem]
    missing = [t for t in tracks if t.split is None]
    if missing and mapping:
        warnings.warn(f"{len(missing)} label tracks not in the split file; splitting them by hash",
                      stacklevel=2)
    for t in missing:
        h = int(hashlib.sha1(f"{seed}:{t.video_stem}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        t.split = "val" if h < val_fraction else "train"
    check_sides_share_split(tracks, split_file)
    return tracks


def check_sides_share_split(tracks: Iterable[LabelTrack], split_file: str | Path | None = None) -> None:
    """Refuse ``X_left`` in train and ``X_right`` in validation (:class:`LabelError` naming both).

    Why: both sides of one video share its audio, scene and often the other person's face; a
    model validated on one side after training on the other is validated on what it has seen.
    """
    by_video: dict[str, list[LabelTrack]] = {}
    for t in tracks:
        if t.split in ("train", "val"):
            by_video.setdefault(t.video_stem, []).append(t)
    for stem, ts in sorted(by_video.items()):
        if len({t.split for t in ts}) > 1:
            tr = next(t for t in ts if t.split == "train")
            va = next(t for t in ts if t.split == "val")
            where = f"the split file {str(split_file)!r}" if split_file else "the label folders"
            raise LabelError(f"{where} puts {tr.name!r} in train and {va.name!r} in val: both are video "
                             f"{stem!r} (same audio and scene), so validation would see training data; "
                             f"put every side of a video in the same split")


def match_videos(tracks: Iterable[LabelTrack], video_keys: Iterable[str]) -> dict[str, str]:
    """Map each track name to a cached video key (by stem, or by the key itself).

    Raises :class:`LabelError` when a stem matches two different keys (two folders holding
    ``X.mp4``): guessing would silently train on the wrong video.
    """
    by_stem: dict[str, list[str]] = {}
    keys = list(video_keys)
    for k in keys:
        by_stem.setdefault(PurePosixPath(k).stem, []).append(k)
    keyset = set(keys)
    out: dict[str, str] = {}
    for t in tracks:
        if t.name in keyset:
            out[t.name] = t.name
            continue
        cands = by_stem.get(t.video_stem, [])
        if len(cands) > 1:
            raise LabelError(f"label {t.name!r} matches several videos {sorted(cands)}; "
                             f"use a CSV with the full video key")
        if cands:
            out[t.name] = cands[0]
    return out
