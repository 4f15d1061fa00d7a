"""The organisers' face crops as a ``faces`` source: an Aff-Wild2-style ``cropped_aligned`` tree.

Most ABAW labs train on the released aligned crops instead of their own detections. Layout read::

    cropped_aligned/<video stem>/00001.jpg          one person: frame 1 (1-based) of video <stem>
    cropped_aligned/<video stem>_left/00001.jpg     two people: one folder per person
    cropped_aligned/<video stem>_right/00001.jpg

A frame with no face has no file. Each video becomes a ``faces``-shaped entry (the same shape the
MTCNN stage writes, so ``visual`` and the trainer read either source unchanged): ``data``
(n_frames, 17) with the crop present as ``prob`` = 1 and ``n_faces`` = people with a crop on that
frame (boxes and landmarks are unknown for given crops: zero), ``mask``, ``crops`` (n, S, S, 3), and
for ``_left``/``_right`` folders the person tracks (``track_*`` extras, ``sides``: left = track 0,
right = track 1). The main-face view of a two-person video is the person with more crops (ties:
left). Row ``i`` is video frame ``i + 1`` (the probe's row count is the frame count).

Validation, per video, before anything is written (a bad video is reported with the reason; the
others are ingested; existing cache entries are never touched):

* no folder for the video, or both ``X/`` and ``X_left``/``X_right``;
* a file that is not ``NNNNN.jpg`` (five digits), frame 00000;
* numbering gaps with one regular stride (every k-th frame: crops cut at a lower frame rate);
* a frame number beyond the video's frame count ("more files than frames");
* a file that does not decode as an image, or whose size differs from the others (or from
  ``crop_size`` when given), or that is not square.

Irregular missing frame numbers are legal (no face there) and are counted in attrs
``missing_frames``.

Fingerprint: the entries' fingerprint hashes the *content* of every ingested folder (file names
and bytes), the crop size and the probe fingerprint — a changed crop tree is a different
fingerprint, never a silent reuse.

Running: :func:`ingest_crop_tree` scans the tree (the fingerprint needs every folder's digest),
then makes one runner run in which :class:`CropTreeSource` is the given source of ``faces``
(:mod:`avpipe.pipeline.given`). So the ingest has what ``extract`` has — the cache lock, tasks
committed one by one, failures recorded in the index, resume after a crash — and ``visual`` is
planned on the crop entries like on any upstream; the MTCNN stage never runs for the tree.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from avpipe.extractors.face_columns import DETECTED, N_COLUMNS, N_FACES, PROB
from avpipe.pipeline.person_tracks import SIDES_ATTR, TRACK_CROPS, TRACKS_ATTR, track_extras
from avpipe.pipeline.stage import Stage, StageResult, VideoRef

NAME = re.compile(r"^(\d{5})\.jpg$")
SOURCE_VERSION = "crops-1"


class CropTreeError(ValueError):
    """One video's crop folders cannot be used (the message names the video and the file)."""


def _child(root: Path, name: str) -> Path:
    """``root / name``, where ``name`` may spell undecodable file-name bytes as ``\\xNN`` (a video
    key does: see :func:`avpipe.pipeline.discover.normalize_key`); then the folder whose real
    name reads that way."""
    p = root / name
    if "\\x" in name and not p.exists() and root.is_dir():
        from avpipe.pipeline.discover import storable

        for e in os.scandir(root):
            if storable(e.name) == name:
                return Path(e.path)
    return p


def find_folders(crops_root: Path, key: str) -> dict[str | None, Path]:
    """The folders of video ``key`` (matched by file stem, as labels are)."""
    stem = PurePosixPath(key).stem
    one = _child(crops_root, stem)
    sides = {s: _child(crops_root, f"{stem}_{s}") for s in ("left", "right")}
    sides = {s: p for s, p in sides.items() if p.is_dir()}
    if one.is_dir() and sides:
        raise CropTreeError(f"{key}: both {one.name}/ and per-person folders "
                            f"({', '.join(p.name + '/' for p in sides.values())}) exist; keep one layout")
    if one.is_dir():
        return {None: one}
    if not sides:
        raise CropTreeError(f"{key}: no crop folder {stem}/ (or {stem}_left/, {stem}_right/) under {crops_root}")
    return dict(sides)


def scan_folder(key: str, folder: Path, n_frames: int) -> dict[int, Path]:
    """frame (1-based) -> file, checking names and numbering against ``n_frames``."""
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        m = NAME.match(p.name)
        if m is None:
            raise CropTreeError(f"{key}: {p} is not a crop image named NNNNN.jpg (5-digit 1-based frame)")
        if not p.is_file():
            raise CropTreeError(f"{key}: {p} is named like a crop but is {_not_a_file(p)}")
        f = int(m.group(1))
        if f == 0:
            raise CropTreeError(f"{key}: {p}: frame numbers are 1-based; 00000.jpg is not a frame")
        if f > n_frames:
            raise CropTreeError(f"{key}: {p}: frame {f} but the video has {n_frames} frames "
                                f"(more crop files than frames: wrong video or numbering)")
        out[f] = p
    if not out:
        raise CropTreeError(f"{key}: {folder} holds no crops")
    check_stride(key, folder, sorted(out))
    return out


def check_stride(key: str, folder: Path, frames: list[int]) -> None:
    """Numbering gaps that cannot be "no face": one regular stride k > 1 between (almost) all
    files, i.e. every k-th frame was cut (crops at a lower frame rate than the video, so file
    ``NNNNN`` would not be video frame NNNNN). Irregular gaps are legal (no face there)."""
    if len(frames) < 10:
        return
    steps = np.diff(np.asarray(frames))
    k = int(np.bincount(steps).argmax())
    if k > 1 and np.mean(steps == k) >= 0.9:
        raise CropTreeError(f"{key}: {folder} has a file every {k} frames ({frames[0]:05d}, {frames[1]:05d}, "
                            f"{frames[2]:05d}, ...): a gap that regular is a lower frame rate, not missing faces; "
                            f"crop file NNNNN must be video frame NNNNN")


def _not_a_file(p: Path) -> str:
    import errno
    import os

    if p.is_symlink():
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "a symlink loop"
            return f"a dangling symlink ({e.strerror})"
    return "a folder" if p.is_dir() else "not a regular file"


#: Largest crop side read (aligned face crops are 112-224 px). Checked from the file header before
#: decoding: a 20000x20000 JPEG needs 1.2 GB decoded and the whole video's array far more.
MAX_CROP_SIDE = 1024


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a JPEG (SOF marker) or PNG (IHDR) header without decoding; None when
    the header is not one of those (the decoder then says what it is)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head[:2] != b"\xff\xd8":
                return None
            fh.seek(2)
            for _ in range(10_000):  # markers before the frame header; bounded
                b = fh.read(1)
                while b == b"\xff":
                    b = fh.read(1)
                if not b:
                    return None
                marker = b[0]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    continue
                seg = fh.read(2)
                if len(seg) < 2:
                    return None
                length = int.from_bytes(seg, "big")
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    sof = fh.read(5)
                    if len(sof) < 5:
                        return None
                    return int.from_bytes(sof[3:5], "big"), int.from_bytes(sof[1:3], "big")
                fh.seek(length - 2, 1)
    except OSError:
        return None
    return None


def _memory_budget() -> int:
    import os

    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def read_crops(key: str, frames: Mapping[int, Path], n: int, size: int | None,
               hashes: dict[int, bytes] | None = None) -> np.ndarray:
    """(n, S, S, 3) uint8 RGB with the crops at rows ``frame - 1``; checks decoding and size.
    Each image's size is read from its header first, so an absurd one fails this video alone,
    before any decoding or allocation. ``hashes`` (frame -> sha256 of the file's bytes) is filled
    from the bytes decoded, so the content digest costs no second read."""
    import cv2

    out: np.ndarray | None = None
    for f, p in sorted(frames.items()):
        wh = header_size(p)
        if wh is not None:
            w, h = wh
            if max(w, h) > MAX_CROP_SIDE:
                raise CropTreeError(f"{key}: {p} is {w}x{h} (from its header); aligned crops are at most "
                                    f"{MAX_CROP_SIDE}x{MAX_CROP_SIDE}: not decoded")
            side = size if size is not None else h
            if out is None and n * side * side * 3 > _memory_budget():
                raise CropTreeError(f"{key}: {n} crops of {side}x{side} need {n * side * side * 3 / 2**30:.1f} GiB, "
                                    "more than half the memory available")
        try:  # read the bytes ourselves: OpenCV crashes on a path that is not valid UTF-8
            blob = p.read_bytes()
        except OSError as e:
            raise CropTreeError(f"{key}: {p}: cannot read ({e.strerror})") from e
        if hashes is not None:
            hashes[f] = hashlib.sha256(blob).digest()
        raw = np.frombuffer(blob, np.uint8)
        img = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
        if img is None:
            raise CropTreeError(f"{key}: {p} does not decode as an image")
        h, w = img.shape[:2]
        if h != w:
            raise CropTreeError(f"{key}: {p} is {w}x{h}; aligned crops must be square")
        if size is None:
            size = h
        if h != size:
            raise CropTreeError(f"{key}: {p} is {w}x{h}, the other crops are {size}x{size}")
        if out is None:
            out = np.zeros((n, size, size, 3), np.uint8)
        out[f - 1] = img[:, :, ::-1]
    assert out is not None
    return out


def folder_digest(frames: Mapping[int, Path]) -> str:
    """sha256 over (frame, file bytes) of one folder: the content, not paths or mtimes."""
    return _folder_digest({f: hashlib.sha256(p.read_bytes()).digest() for f, p in frames.items()})


def _folder_digest(hashes: Mapping[int, bytes]) -> str:
    """:func:`folder_digest` from the files' sha256 digests (frame -> digest)."""
    h = hashlib.sha256()
    for f, d in sorted(hashes.items()):
        h.update(f"{f}\0".encode())
        h.update(d)
    return h.hexdigest()


def _video_digest(folder_digests: Mapping[str | None, str]) -> str:
    """One video's content digest from its people's folder digests."""
    people = sorted(folder_digests, key=lambda p: (p is not None, p or ""))
    return hashlib.sha256("".join(f"{p}:{folder_digests[p]}\n" for p in people).encode()).hexdigest()


def scan_video(key: str, folders: Mapping[str | None, Path], n: int) -> tuple[dict[str | None, dict[int, Path]], str]:
    """Names and numbering of one video's folders checked; (person -> frame -> file, content digest)."""
    frames = {p: scan_folder(key, d, n) for p, d in folders.items()}
    return frames, _video_digest({p: folder_digest(fr) for p, fr in frames.items()})


def crops_result(key: str, folders: Mapping[str | None, Path], n: int, crop_size: int | None = None,
                 scanned: tuple[dict[str | None, dict[int, Path]], str] | None = None
                 ) -> tuple[StageResult, str]:
    """One video's faces-shaped result and the digest of its folders (``scanned``: from
    :func:`scan_video`; without it the digest is taken from the bytes decoded, one read per file)."""
    if scanned is not None:
        frames, digest = scanned
    else:
        frames, digest = {p: scan_folder(key, d, n) for p, d in folders.items()}, None
    hashes: dict[str | None, dict[int, bytes]] = {p: {} for p in frames}
    crops = {p: read_crops(key, fr, n, crop_size, hashes[p]) for p, fr in frames.items()}
    if digest is None:
        digest = _video_digest({p: _folder_digest(h) for p, h in hashes.items()})
    sizes = {c.shape[1] for c in crops.values()}
    if len(sizes) > 1:
        raise CropTreeError(f"{key}: the person folders hold crops of different sizes {sorted(sizes)}")
    S = sizes.pop()
    masks = {p: np.zeros(n, bool) for p in frames}
    for p, fr in frames.items():
        masks[p][np.array(sorted(fr)) - 1] = True
    people = sorted(frames, key=lambda p: (p is not None, p or ""))  # None | left, right
    count = sum(m.astype(np.float32) for m in masks.values())
    main = max(people, key=lambda p: (int(masks[p].sum()), p == "left"))

    def rows(m: np.ndarray) -> np.ndarray:
        d = np.zeros((n, N_COLUMNS), np.float32)
        d[m, PROB], d[m, N_FACES], d[m, DETECTED] = 1.0, count[m], 1.0
        d[~m, N_FACES] = count[~m]
        return d

    extras: dict[str, np.ndarray] = {"crops": crops[main]}
    sides: dict[str, int] = {}
    tracks: list[dict[str, Any]] = []
    if None not in frames:
        persons = [p for p in ("left", "right") if p in frames]
        extras.update(track_extras(np.arange(len(persons)), np.stack([rows(masks[p]) for p in persons]),
                                   np.stack([masks[p] for p in persons])))
        extras[TRACK_CROPS] = np.stack([crops[p] for p in persons])
        for i, p in enumerate(persons):
            sides[str(p)] = i
            r = np.flatnonzero(masks[p])
            tracks.append({"id": i, "frames": int(len(r)), "first": int(r[0]), "last": int(r[-1]),
                           "mean_box": [], "median_cx": None, "side": p, "folder": folders[p].name})
    attrs = {
        "source": "cropped_aligned",
        "folders": {str(p): folders[p].name for p in people},
        "crop_size": S,
        "content_digest": digest,
        "missing_frames": {str(p): int(n - masks[p].sum()) for p in people},
        "main_face": str(main),
        "columns_doc": "given crops: prob = 1 and detected = 1 where a crop exists, n_faces = people with a "
                       "crop on the frame; boxes and landmarks are unknown (0)",
        "row_policy": "row i = video frame i+1 = crop file {i+1:05d}.jpg",
        "n_frames": n,
        "faces_found": int(masks[main].sum()),
        TRACKS_ATTR: tracks,
        SIDES_ATTR: sides,
        "side_rule": "from the folder names X_left / X_right",
    }
    return StageResult(data=rows(masks[main]), mask=masks[main].copy(), extras=extras, attrs=attrs), digest


# -- the crop tree as a source of ``faces`` entries, run by the runner ---------------------------
@dataclass
class CropSourceConfig:
    """What the source reads, fixed when the tree was scanned (the fingerprint hashes it).

    ``videos``: content id -> (the video key whose folders are read, their content digest);
    ``failed``: content id -> why no folder of those bytes can be read (found while scanning)."""

    crops_root: str
    crop_size: int | None = None
    videos: dict[str, tuple[str, str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    videos_per_task: int = 8


class CropTreeSource(Stage):
    """The crop tree read as ``faces`` entries: one video's folders per ``compute``.

    Not registered (``faces`` names the MTCNN stage): it is handed to the runner as the source of
    the given ``faces`` entries (:class:`~avpipe.pipeline.given.Given`), so the runner's tasks,
    shard writer, index transactions, failure records, progress and resume do the work. A video
    whose folders changed since they were scanned fails: its bytes are not what the fingerprint
    hashes."""

    name = "faces"
    version = SOURCE_VERSION
    config_cls = CropSourceConfig
    per_frame = True

    def __init__(self, config: CropSourceConfig | None = None, runtime: Any = None) -> None:
        super().__init__(config, runtime)
        self.videos_per_task = max(1, int(self.config.videos_per_task))  # type: ignore[misc]

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        cfg: CropSourceConfig = self.config
        cid = video.content_id
        if cid in cfg.failed:
            raise CropTreeError(cfg.failed[cid])
        if cid not in cfg.videos:
            raise CropTreeError(f"{video.key}: not in the crop tree as scanned (a video added since?)")
        key, want = cfg.videos[cid]
        probe = inputs["probe"]
        n = int(probe.attrs.get("n_frames", len(probe.data)))
        res, digest = crops_result(key, find_folders(Path(cfg.crops_root), key), n, cfg.crop_size)
        if digest != want:
            raise CropTreeError(f"{key}: its crop folders changed while being ingested; run ingest-crops again")
        return res


@dataclass
class TreeScan:
    """Pass 1 over the tree: names, numbering and content digests, no decoding."""

    probe_fingerprint: str | None = None
    videos: dict[str, tuple[str, str]] = field(default_factory=dict)  # cid -> (key, digest)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # cid -> (key, why): the source records it
    failed_keys: list[tuple[str, str]] = field(default_factory=list)  # (key, why) no run records
    used: set[str] = field(default_factory=set)  # folder names that belong to a video

    def config(self, crop_size: int | None) -> dict[str, Any]:
        """The source config the fingerprint hashes (its recipe is frozen: caches hold these)."""
        content = "\n".join(sorted(f"{k}:{d}" for k, d in self.videos.values()))
        return {"source": "cropped_aligned", "crop_size": crop_size, "probe": self.probe_fingerprint,
                "content": hashlib.sha256(content.encode()).hexdigest()}


def scan_tree(crops_root: Path, videos_root: str | Path, cache_root: str | Path) -> TreeScan:
    """Check every probed video's folders and hash their files; bad videos become failures."""
    from avpipe.pipeline.discover import iter_video_files
    from avpipe.pipeline.store import Cache

    scan = TreeScan()
    by_cid: dict[str, tuple[str, str]] = {}  # cid -> first (key, why) that failed
    with Cache(cache_root) as cache:
        for key in (v.key for v in iter_video_files(videos_root)):
            try:
                probe = cache.read("probe", key)
            except Exception as e:  # noqa: BLE001 - the store's not-found error, whatever its class
                scan.failed_keys.append((key, f"not probed ({e})"))
                continue
            scan.probe_fingerprint = scan.probe_fingerprint or str(probe.fingerprint)
            n = int(probe.attrs.get("n_frames", len(probe.data)))
            cid = str(probe.content_id)
            try:
                folders = find_folders(crops_root, key)
                scan.used.update(p.name for p in folders.values())
                _, digest = scan_video(key, folders, n)
            except CropTreeError as e:
                by_cid.setdefault(cid, (key, str(e)))
                continue
            scan.videos.setdefault(cid, (key, digest))  # same bytes under two keys: one entry
    for cid, (key, why) in by_cid.items():
        if cid in scan.videos:  # another key of these bytes is ingested: report this one here
            scan.failed_keys.append((key, why))
        else:
            scan.failed[cid] = (key, why)
    return scan


@dataclass
class IngestReport:
    faces_fingerprint: str | None
    visual_fingerprint: str | None
    ingested: list[str]
    failed: list[tuple[str, str]]  # (video key, reason)
    unused_folders: list[str]


def ingest_crop_tree(crops_root: str | Path, videos_root: str | Path, cache_root: str | Path, *,
                     backbone: str | None = None, crop_size: int | None = None, runtime: Any = None,
                     chunk: int = 8, log: Callable[[str], None] = print,
                     stages: list[str] | None = None, progress: bool = False) -> IngestReport:
    """Probe the videos, read their crop folders as ``faces`` entries and compute ``visual``
    (embedded with ``backbone``; None: faces only) and any other ``stages`` on them. Bad videos
    are reported, not fatal.

    Both steps are one runner run with ``faces`` given (:class:`~avpipe.pipeline.given.Given`):
    the crop-tree source writes the entries under the tree's own fingerprint, and no other faces
    (no MTCNN) are ever computed for it; downstream stages are planned on them like on any
    upstream. So the cache lock is held, each task of ``chunk`` videos is committed on its own,
    failures are recorded, and a rerun after a crash computes only what is missing. The tree is
    read twice: names, numbering and content digests first (the fingerprint needs all of them),
    then each video decoded once, when its task runs."""
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.given import Given
    from avpipe.pipeline.ingest import precomputed
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.store import Cache

    crops_root = Path(crops_root)
    if not crops_root.is_dir():
        raise FileNotFoundError(f"crop tree not found: {crops_root}")
    wanted = list(dict.fromkeys((["visual"] if backbone else []) + list(stages or []))) or ["faces"]
    config = PipelineConfig({"visual": {"backbone": backbone}} if backbone else {})
    _check_weights(wanted, config, runtime)  # before any video is probed or read
    summary = run_extract(cache_root, videos_root, stages=["probe"], progress=False, say=log)
    if not summary.ok:
        log(summary.render())
    scan = scan_tree(crops_root, videos_root, cache_root)
    unused = sorted(p.name for p in crops_root.iterdir() if p.is_dir() and p.name not in scan.used)
    if not scan.videos:
        return IngestReport(None, None, [], scan.failed_keys + list(scan.failed.values()), unused)
    faces = precomputed("faces", scan.config(crop_size), SOURCE_VERSION, {"probe": str(scan.probe_fingerprint)})
    source = CropTreeSource(CropSourceConfig(str(crops_root.absolute()), crop_size, dict(scan.videos),
                                             {c: why for c, (_, why) in scan.failed.items()}, chunk), runtime)
    run = run_extract(cache_root, videos_root, config, stages=wanted, runtime=runtime, progress=progress,
                      say=log, given={"faces": Given(faces, source)},
                      retry_failed=[s for s in wanted if s != "probe"] + ["faces"])
    fps = {s.name: s.fingerprint for s in run.stages}
    failed = list(scan.failed_keys)
    failed += [(f.key, f.message if f.stage == "faces" else f"{f.stage}: {f.message}") for f in run.failures]
    with Cache(cache_root) as cache:
        done = cache.index.done(faces.value)
    ingested = sorted(k for c, (k, _) in scan.videos.items() if c in done)
    if not ingested:
        return IngestReport(None, None, [], failed, unused)
    log(f"faces: {len(ingested)} video(s) from {crops_root} -> fingerprint {faces.value[:16]}")
    vfp = fps.get("visual") if backbone else None
    if vfp:
        log(f"visual ({backbone}): fingerprint {vfp[:16]}")
    for s in wanted:
        if s not in ("visual", "faces") and fps.get(s):
            log(f"{s}: fingerprint {fps[s]}")
    return IngestReport(faces.value, vfp, ingested, failed, unused)


def _check_weights(stages: list[str], config: Any, runtime: Any) -> None:
    """Missing weights of a stage computed on the crops, as the weights registry words it
    (:class:`~avpipe.pipeline.types.WeightsMissingError`), before the tree is touched."""
    from avpipe.pipeline.stage import get_stage_class, topological_order

    for name in topological_order(stages):
        if name not in ("probe", "faces"):
            get_stage_class(name)(config.stage_config(name), runtime).weights_id()
