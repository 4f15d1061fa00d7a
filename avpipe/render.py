"""``avpipe render``: look at what the cache holds for one video, as pictures.

For one cached video this draws, per frame: the frame with the cached face box and its 5
landmarks (green box: full MTCNN cascade on that frame; yellow: tracked between key frames;
masked frames get a red border and say so) and, when the faces entry stores one track per person,
the other people's boxes in other colours with their track id and side, the strip of aligned crops around the frame, the word
being spoken (``asr``), the log-mel spectrogram around the frame with the cursor at the frame time
and the ``logmel`` stage's window for that frame outlined (so one can see that a forward window
starts at the frame, a causal one ends there), and — with ``--run`` — the predicted and labelled
valence/arousal over the whole video with a cursor. Output: an annotated MP4 (PyAV) and a PNG
contact sheet of a few frames, plus ``contact_sheet.json`` saying where each frame's picture is
and at which scale (so a test, or a person, can map cache coordinates to sheet pixels).

It reads only the cache and the video file: no detector, no model run except the trained
fusion model (for predictions, on cached features). Works on a cache built elsewhere: the video
is found as given (a path), or under ``--videos DIR`` by its key, or — if the key's path
differs — by content hash among the files there.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BOX_DETECTED = (0, 255, 0)  # RGB
BOX_TRACKED = (255, 255, 0)
LANDMARK = (255, 0, 255)
MASKED = (255, 0, 0)
TRACK_COLORS = ((255, 128, 0), (0, 200, 255), (255, 80, 160), (160, 120, 255))  # other people's tracks
BG = (24, 24, 24)
FG = (230, 230, 230)
V_COLOR, A_COLOR = (80, 160, 255), (255, 150, 40)


class RenderError(ValueError):
    """Rendering failed on good arguments (a frame does not decode, the MP4 cannot be encoded,
    a run's features are missing): exit 1."""


class RenderInputError(RenderError):
    """The arguments name nothing renderable (unknown video, no file, no cache, nothing cached
    for it): a usage error, exit 2."""


# ----------------------------------------------------------------------------- what the cache says
@dataclass
class CachedVideo:
    """Everything the pictures need for one video, read from the cache."""

    key: str
    content_id: str
    path: Path
    times: np.ndarray  # per-frame seconds (probe)
    fps: float
    size: tuple[int, int]  # width, height
    faces: np.ndarray | None = None  # (n, N_COLUMNS) rows, see avpipe.extractors.face_columns
    face_mask: np.ndarray | None = None
    crop_reader: Any = None  # callable(list[int]) -> (k, S, S, 3) uint8
    # one track per person when the faces entry has them (extras track_ids/track_data/track_mask)
    tracks: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (label, rows, mask)
    words: list[tuple[float, float, str]] = field(default_factory=list)
    has_asr: bool = False
    spec: np.ndarray | None = None  # (n_stft, n_mels) log-mel of the whole track
    spec_hop: float = 0.01
    mel_window: tuple[str, float] | None = None  # (anchor, window_s) of the logmel stage
    audio_note: str = "no audio entry in the cache"
    va_pred: np.ndarray | None = None  # (n, 2)
    va_label: np.ndarray | None = None  # (n, 2), nan where unlabelled
    run_name: str = ""
    label_note: str = "thin: predicted, thick: labels"
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)  # per-video drawings reused every frame

    @property
    def n(self) -> int:
        return len(self.times)

    def word_at(self, t: float) -> tuple[str, str, str]:
        """(previous, current, next) word around time ``t`` ('' where none)."""
        prev = cur = nxt = ""
        for s, e, w in self.words:
            if s <= t < e:
                cur = w
            elif e <= t:
                prev = w
            elif s > t and not nxt:
                nxt = w
        return prev, cur, nxt


def _find_video_file(cache: Any, key: str, cid: str, given: Path | None, videos: Path | None) -> Path:
    from avpipe.pipeline.discover import content_hash, iter_video_files, normalize_key

    if given is not None and given.is_file():
        return given
    if videos is None:  # where extract found it, if those bytes are still there
        for p in cache.index.paths_for(cid):
            if Path(p).is_file() and content_hash(p) == cid:
                return Path(p)
    if videos is not None:
        rel = Path(*[p for p in Path(normalize_key(key)).parts if p not in ("..", "/")])
        cand = videos / rel
        if cand.is_file():
            return cand
        for f in iter_video_files(videos):  # moved or renamed: match by content
            if Path(f.key).name == rel.name or f.size == _probe_size(cache, cid):
                if content_hash(f.path) == cid:
                    return Path(f.path)
    raise RenderInputError(f"video file of {key!r} (content id {cid[:16]}) not found"
                      + (f" under {videos}" if videos else "; give its path or --videos DIR"))


def _probe_size(cache: Any, cid: str) -> int | None:
    try:
        return int(cache.read("probe", cid).attrs.get("file_size"))
    except Exception:  # noqa: BLE001 - only a shortcut
        return None


def _read(cache: Any, stage: str, cid: str) -> Any:
    try:
        return cache.read(stage, cid)
    except KeyError:
        return None


def load_cached(cache_root: str | Path, video: str, videos: Path | None = None) -> CachedVideo:
    """Resolve ``video`` (a path to the file, a key or a content id) and read its entries."""
    from avpipe.pipeline.store import Cache

    try:
        cache = Cache(cache_root)
    except FileNotFoundError as e:
        raise RenderInputError(str(e)) from e
    given = Path(video) if Path(video).is_file() else None
    with cache:
        if given is not None:
            from avpipe.pipeline.discover import content_hash

            cid = content_hash(given)
            try:
                cid = cache.resolve_video(cid)
            except KeyError:
                raise RenderInputError(f"{video}: this file's content is not in the cache at {cache.root}") from None
        else:
            try:
                cid = cache.resolve_video(video)
            except KeyError as e:
                raise RenderInputError(str(e.args[0] if e.args else e)) from None
        keys = cache.index.keys_for(cid)
        key = video if video in keys else (keys[0] if keys else cid)
        probe = _read(cache, "probe", cid)
        if probe is None:
            raise RenderInputError(f"{video}: no probe entry in the cache (run avpipe extract on it first)")
        pa = probe.attrs
        cv = CachedVideo(key=key, content_id=cid, path=_find_video_file(cache, key, cid, given, videos),
                         times=np.asarray(probe.data, np.float64), fps=float(pa.get("fps") or 25.0),
                         size=(int(pa.get("width", 0)), int(pa.get("height", 0))))
        faces = _read(cache, "faces", cid)
        if faces is not None:
            cv.faces, cv.face_mask = np.asarray(faces.data, np.float32), np.asarray(faces.mask, bool)
            cv.crop_reader = _crop_reader(faces)
            cv.tracks = person_tracks(faces)
        asr = _read(cache, "asr", cid)
        if asr is not None:
            cv.has_asr = True
            if "words" in asr.extras:
                ws = [str(w) for w in asr.extra("words")]
                wt = np.asarray(asr.extra("word_times"), np.float64).reshape(-1, 2)
                cv.words = [(float(s), float(e), w.strip()) for (s, e), w in zip(wt, ws)]
        _load_audio(cache, cid, cv)
    return cv


def person_tracks(entry: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every person's track of a faces entry that stores them (extras ``track_ids``,
    ``track_data`` (T, n, N_COLUMNS), ``track_mask`` (T, n); attrs ``sides``), labelled ``T<id>`` plus the
    side bound to it; [] for entries with the main-face track only."""
    from avpipe.pipeline.person_tracks import read_tracks

    pt = read_tracks(entry.extras, entry.extra, entry.attrs, np.float32)
    if pt is None:
        return []
    labels = [f"T{t}" + (f" {pt.side_of(t)}" if pt.side_of(t) else "") for t in pt.ids]
    return [(label, pt.data[k], pt.mask[k]) for k, label in enumerate(labels)]


def _crop_reader(entry: Any) -> Any:
    """Read only the crops asked for (a long video's crops do not fit in memory)."""
    def read(rows: Sequence[int]) -> np.ndarray:
        return entry.extra_at("crops", sorted(set(int(r) for r in rows)))
    return read


def _load_audio(cache: Any, cid: str, cv: CachedVideo) -> None:
    from avpipe.extractors.logmel import LogMelConfig, log_mel_spectrogram
    from avpipe.pipeline.config_schema import config_from_dict

    lm = _read(cache, "logmel", cid)
    cfg = LogMelConfig()
    if lm is not None:
        info = {f.fingerprint: f for f in cache.fingerprints("logmel")}.get(lm.fingerprint)
        if info is not None:
            try:
                cfg = config_from_dict(LogMelConfig, info.config)
            except (ValueError, TypeError):
                pass
        cv.mel_window = (str(lm.attrs.get("anchor", cfg.anchor)), float(lm.attrs.get("window_s", cfg.window_s)))
    au = _read(cache, "audio", cid)
    if au is None:
        return
    if not au.present or np.asarray(au.data).size == 0:
        cv.audio_note = "no audio stream (masked)"
        return
    cv.spec = log_mel_spectrogram(np.asarray(au.data, np.float32), cfg)
    cv.spec_hop = cfg.hop_s


def attach_run(cv: CachedVideo, run_path: str | Path, cache_root: str | Path) -> None:
    """Predicted (trained model on the cached features) and labelled valence/arousal."""
    from avpipe.fusion.predictor import Predictor
    from avpipe.fusion.source import FeatureError

    try:
        predictor = Predictor.from_run(run_path, cache=cache_root, device="cpu")
    except FileNotFoundError as e:
        raise RenderError(f"--run {run_path}: {e}") from e
    cfg = predictor.config
    cv.run_name = Path(run_path).name
    try:
        pred = predictor.predict(cv.content_id, name=cv.key)
    except FeatureError as e:
        raise RenderError(f"--run {run_path}: the run's features are not cached for {cv.key}: {e}") from e
    cv.va_pred = _fit(pred.values, cv.n)
    try:
        from avpipe.fusion.labels import load_labels, match_videos

        tracks = load_labels(cfg.labels)
        km = match_videos(tracks, [cv.key])
        tr = next((t for t in tracks if t.name in km), None)
        if tr is not None:
            y = tr.aligned(cv.n, cfg.label_tolerance).astype(np.float64)
            y[np.any(y <= -5, axis=1)] = np.nan
            cv.va_label = y
        else:
            cv.label_note = "predicted; no label track for this video"
    except Exception:  # noqa: BLE001 - labels of another machine: draw predictions only
        cv.va_label = None
        cv.label_note = f"predicted; labels {cfg.labels} not readable here"


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(a, np.float64)[:n]
    return np.concatenate([a, np.full((n - len(a), 2), np.nan)]) if len(a) < n else a


# ----------------------------------------------------------------------------- drawing
def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.42, color=FG) -> None:
    import cv2

    s = s.encode("ascii", "replace").decode()  # OpenCV's Hershey fonts are ASCII
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def box_pixels(row: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    """Where a cached box (frame pixels) is drawn on a tile of ``scale``: the rounded corners."""
    from avpipe.extractors.face_columns import BOX  # lazily: importing render stays cheap

    x0, y0, x1, y1 = (float(v) * scale for v in row[BOX])
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def draw_frame(frame: np.ndarray, cv: CachedVideo, i: int, width: int) -> tuple[np.ndarray, float]:
    """The frame scaled to ``width`` with the cached box/landmarks drawn at that scale (drawn after
    scaling, so box pixels are exact colours at :func:`box_pixels`). Returns (tile, scale)."""
    import cv2

    from avpipe.extractors.face_columns import BOX, DETECTED, landmarks

    h, w = frame.shape[:2]
    s = width / float(w)
    tile = np.ascontiguousarray(cv2.resize(frame, (width, max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA))
    if cv.faces is None:
        return tile, s
    main = cv.faces[i] if i < len(cv.face_mask) and cv.face_mask[i] else None
    for k, (label, rows, mask) in enumerate(cv.tracks):  # other people first, the main face on top
        if i >= len(mask) or not mask[i] or (main is not None and np.allclose(rows[i, BOX], main[BOX], atol=0.5)):
            continue
        x0, y0, x1, y1 = box_pixels(rows[i], s)
        color = TRACK_COLORS[k % len(TRACK_COLORS)]
        for x, y in landmarks(rows[i]):
            cv2.circle(tile, (int(round(x * s)), int(round(y * s))), 2, color, -1)
        cv2.rectangle(tile, (x0, y0), (x1, y1), color, 2)
        _text(tile, label, (x0 + 3, y1 - 5), 0.4, color)
    if main is not None:
        row = main
        for x, y in landmarks(row):
            cv2.circle(tile, (int(round(x * s)), int(round(y * s))), 2, LANDMARK, -1)
        x0, y0, x1, y1 = box_pixels(row, s)
        cv2.rectangle(tile, (x0, y0), (x1, y1), BOX_DETECTED if row[DETECTED] >= 0.5 else BOX_TRACKED, 2)
    else:
        cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1), MASKED, 4)
    return tile, s


def _crop_strip(cv: CachedVideo, i: int, width: int, k: int = 7) -> np.ndarray:
    import cv2

    side = max(8, min(72, width // k))
    strip = np.full((side + 4, width, 3), BG, np.uint8)
    if cv.faces is None:
        _text(strip, "no faces entry in the cache", (6, side // 2 + 6))
        return strip
    rows = [j for j in range(i - k // 2, i + k // 2 + 1)]
    have = [j for j in rows if 0 <= j < cv.n and cv.face_mask[j]]
    crops = dict(zip(sorted(set(have)), cv.crop_reader(have))) if have else {}
    x = (width - k * side) // 2
    for j in rows:
        cell = strip[2:2 + side, x:x + side]
        if j in crops:
            cell[:] = cv2.resize(crops[j], (side, side), interpolation=cv2.INTER_AREA)
        elif 0 <= j < cv.n:
            cell[:] = (60, 20, 20)
            cv2.line(cell, (0, 0), (side - 1, side - 1), MASKED, 1)
            cv2.line(cell, (0, side - 1), (side - 1, 0), MASKED, 1)
        if j == i:
            cv2.rectangle(strip, (x - 1, 1), (x + side, side + 2), FG, 1)
        x += side
    return strip


def _mel_strip(cv: CachedVideo, i: int, width: int, height: int = 72, span: float = 3.0) -> np.ndarray:
    import cv2
    from matplotlib import colormaps

    strip = np.full((height, width, 3), BG, np.uint8)
    if cv.spec is None or len(cv.spec) == 0:
        _text(strip, f"log-mel: {cv.audio_note}", (6, height // 2 + 4))
        return strip
    t = float(cv.times[i])
    t0 = t - span / 2
    idx = np.round((t0 + np.arange(width) * span / width) / cv.spec_hop).astype(np.int64)
    inside = (idx >= 0) & (idx < len(cv.spec))
    spec = cv.spec[np.clip(idx, 0, len(cv.spec) - 1)].T[::-1]  # (mels, width), low bands at the bottom
    if "mel_range" not in cv._memo:  # colour scale of the whole track, computed once
        cv._memo["mel_range"] = (np.percentile(cv.spec, 2), np.percentile(cv.spec, 99.5))
    lo, hi = cv._memo["mel_range"]
    z = np.clip((spec - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = (colormaps["magma"](z)[..., :3] * 255).astype(np.uint8)
    rgb[:, ~inside] = BG
    strip[:] = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    px = lambda sec: int(round((sec - t0) / span * width))  # noqa: E731
    if cv.mel_window is not None:
        anchor, w = cv.mel_window
        a = {"forward": t, "causal": t - w, "centered": t - w / 2}.get(anchor, t)
        cv2.rectangle(strip, (px(a), 1), (px(a + w) - 1, height - 2), (0, 255, 255), 1)
    cv2.line(strip, (px(t), 0), (px(t), height - 1), (255, 255, 255), 1)
    strip[:16, : min(width, 250)] //= 3  # darken under the label
    _text(strip, f"log-mel {span:.0f}s" + (f", {cv.mel_window[0]} window {cv.mel_window[1]:.2f}s"
                                           if cv.mel_window else ""), (4, 12), 0.38)
    return strip


def _va_strip(cv: CachedVideo, i: int, width: int, height: int = 80) -> np.ndarray:
    import cv2

    xs = np.linspace(0, width - 1, cv.n) if cv.n > 1 else np.zeros(1)
    if ("va", width, height) not in cv._memo:  # the traces are the same on every frame: draw once
        cv._memo[("va", width, height)] = _va_background(cv, xs, width, height)
    strip = cv._memo[("va", width, height)].copy()
    x = int(round(xs[min(i, len(xs) - 1)]))
    cv2.line(strip, (x, 0), (x, height - 1), (255, 255, 255), 1)
    p = cv.va_pred[i] if cv.va_pred is not None else (math.nan, math.nan)
    strip[:16] //= 2
    _text(strip, f"run {cv.run_name}: V {p[0]:+.2f} A {p[1]:+.2f} ({cv.label_note})", (4, 12), 0.36)
    return strip


def _va_background(cv: CachedVideo, xs: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    strip = np.full((height, width, 3), BG, np.uint8)
    cv2.line(strip, (0, height // 2), (width - 1, height // 2), (70, 70, 70), 1)
    ypx = lambda v: (height - 1) - (np.clip(v, -1, 1) + 1) / 2 * (height - 1)  # noqa: E731

    def poly(vals: np.ndarray, color, thick: int) -> None:
        ok = np.isfinite(vals)
        for seg in np.split(np.arange(len(vals)), np.flatnonzero(np.diff(ok.astype(int)) != 0) + 1):
            if len(seg) > 1 and ok[seg[0]]:
                pts = np.stack([xs[seg], ypx(vals[seg])], 1).round().astype(np.int32)
                cv2.polylines(strip, [pts], False, color, thick, cv2.LINE_AA)

    if cv.va_label is not None:
        poly(cv.va_label[:, 0], tuple(c // 2 for c in V_COLOR), 3)
        poly(cv.va_label[:, 1], tuple(c // 2 for c in A_COLOR), 3)
    if cv.va_pred is not None:
        poly(cv.va_pred[:, 0], V_COLOR, 1)
        poly(cv.va_pred[:, 1], A_COLOR, 1)
    return strip


def _info_strip(cv: CachedVideo, i: int, width: int, height: int = 22) -> np.ndarray:
    from avpipe.extractors.face_columns import DETECTED, PROB

    strip = np.full((height, width, 3), BG, np.uint8)
    t = float(cv.times[i])
    face = ("no faces entry" if cv.faces is None else
            "NO FACE (masked)" if not cv.face_mask[i] else
            f"face p={cv.faces[i, PROB]:.2f} {'detected' if cv.faces[i, DETECTED] >= .5 else 'tracked'}")
    prev, cur, nxt = cv.word_at(t)
    word = (f"'{cur}'" if cur else "-") if cv.has_asr else "no asr entry"
    color = MASKED if cv.faces is not None and not cv.face_mask[i] else FG
    _text(strip, f"#{i} t={t:.2f}s  {face}  word: {word}", (4, 15), 0.4, color)
    return strip


def render_panel(frame: np.ndarray, cv: CachedVideo, i: int, width: int) -> tuple[np.ndarray, float]:
    """One frame's full picture (frame tile on top at (0, 0)) and the tile's scale."""
    tile, s = draw_frame(frame, cv, i, width)
    parts = [tile, _info_strip(cv, i, width), _crop_strip(cv, i, width), _mel_strip(cv, i, width)]
    if cv.va_pred is not None or cv.va_label is not None:
        parts.append(_va_strip(cv, i, width))
    return np.concatenate(parts, axis=0), s


# ----------------------------------------------------------------------------- outputs
def _sheet_frames(cv: CachedVideo, k: int) -> list[int]:
    """``k`` frames spread over the video, always including the first masked and the first face
    frame, so a contact sheet shows both states when the video has both."""
    n = cv.n
    picks = set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist())
    if cv.face_mask is not None and len(picks) >= 2:
        for want in (False, True):
            hits = np.flatnonzero(cv.face_mask == want)
            if len(hits) and not any(cv.face_mask[j] == want for j in picks):
                picks.discard(max(picks - {0}, default=0))
                picks.add(int(hits[0]))
    return sorted(picks)


def _atomic_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from avpipe.pipeline.atomic import atomic_write_bytes

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover
        raise RenderError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def render(cv: CachedVideo, out: str | Path, *, sheet_frames: int = 8, sheet_cols: int = 4,
           sheet_width: int = 320, video_width: int = 480, mp4: bool = True,
           max_frames: int | None = None) -> dict[str, Path]:
    """Write ``<stem>.mp4`` (every frame, or the first ``max_frames``), ``<stem>_sheet.png`` and
    ``<stem>_sheet.json`` under ``out``; returns their paths."""
    from avpipe.extractors.media import iter_frames  # the stages' decoder: row i = the i-th frame
    from avpipe.pipeline.atomic import atomic_path, atomic_write_text
    from avpipe.pipeline.discover import output_path_for

    out = Path(out)
    base = output_path_for(out, cv.key, "")  # a safe path inside ``out`` from the key
    base.parent.mkdir(parents=True, exist_ok=True)
    want = _sheet_frames(cv, sheet_frames)
    tiles: dict[int, tuple[np.ndarray, float]] = {}
    n_out = cv.n if max_frames is None else min(cv.n, max_frames)
    writer = None
    mp4_path = base.with_name(base.name + ".mp4")
    decoded = 0
    with atomic_path(mp4_path) if mp4 else nullcontext(None) as tmp:
        for i, frame in enumerate(iter_frames(cv.path)):
            if i >= cv.n:
                break
            decoded += 1
            if i in want:
                tiles[i] = render_panel(frame, cv, i, sheet_width)
            if tmp is not None and i < n_out:
                panel, _ = render_panel(frame, cv, i, video_width)
                if writer is None:
                    writer = _Mp4(tmp, panel.shape[1], panel.shape[0], cv.fps)
                writer.write(panel)
            elif i > max(want, default=0):
                break
        if writer is not None:
            writer.close()
        elif tmp is not None:
            tmp.unlink()  # no frame to write: no mp4 (an existing one is left as it was)
    if not tiles:
        raise RenderError(f"{cv.path}: no frame could be decoded")
    order = sorted(tiles)
    th = max(t[0].shape[0] for t in tiles.values())
    cols = max(1, min(sheet_cols, len(order)))
    rows = math.ceil(len(order) / cols)
    gap, head = 6, 26
    sheet = np.full((head + rows * (th + gap), cols * (sheet_width + gap) - gap, 3), (12, 12, 12), np.uint8)
    title = (f"{cv.key}  ({cv.content_id[:12]})  {cv.n} frames @ {cv.fps:.2f} fps  {cv.size[0]}x{cv.size[1]}"
             + (f"  faces on {int(cv.face_mask.sum())}/{cv.n}" if cv.face_mask is not None else "  no faces entry"))
    _text(sheet, title, (6, 18), 0.5)
    layout = []
    for k, i in enumerate(order):
        img, s = tiles[i]
        x, y = (k % cols) * (sheet_width + gap), head + (k // cols) * (th + gap)
        sheet[y:y + img.shape[0], x:x + img.shape[1]] = img
        layout.append({"frame": int(i), "x": int(x), "y": int(y), "scale": float(s),
                       "masked": bool(cv.face_mask is not None and not cv.face_mask[i])})
    png = base.with_name(base.name + "_sheet.png")
    _atomic_png(png, sheet)
    meta = base.with_name(base.name + "_sheet.json")
    atomic_write_text(meta, json.dumps({"video": cv.key, "content_id": cv.content_id, "tiles": layout,
                                        "decoded_frames": decoded, "box_colors": {"detected": BOX_DETECTED,
                                        "tracked": BOX_TRACKED, "masked_border": MASKED}}, indent=2) + "\n")
    res = {"sheet": png, "layout": meta}
    if mp4 and mp4_path.exists():
        res["mp4"] = mp4_path
    return res


class _Mp4:
    """H.264 (libx264, yuv420p) through PyAV; MPEG-4 part 2 where no H.264 encoder is built in."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        import av
        from fractions import Fraction

        self.w, self.h = width - width % 2, height - height % 2
        self.c = av.open(str(path), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self.s = self.c.add_stream("libx264", rate=rate)
            self.s.options = {"crf": "23", "preset": "veryfast"}
        except Exception:  # noqa: BLE001 - encoder not in this FFmpeg build
            self.s = self.c.add_stream("mpeg4", rate=rate)
        self.s.width, self.s.height, self.s.pix_fmt = self.w, self.h, "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        import av

        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.h, : self.w]), format="rgb24")
        for p in self.s.encode(f):
            self.c.mux(p)

    def close(self) -> None:
        for p in self.s.encode():
            self.c.mux(p)
        self.c.close()
