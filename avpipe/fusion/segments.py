"""Transcript segments as training and evaluation sequences (MAVEN's data: one sequence per segment).

Why a module of its own: the authors' MAVEN does not cut videos into fixed windows. Each
transcript line ``[s - e] text`` is one sequence: its frames attend to one audio token and one
text token of that segment, and the video's frames are split by the segment *end* times only.
Segment k spans [e_{k−1}, e_k) (e_0 = 0) at an assumed 30 fps: 0-based frames
``⌊30·e_{k−1}⌋ … ⌊30·e_{k−1}⌋ + ⌊30·(e_k − e_{k−1})⌋ − 1``, capped at the video's frame count; a
video without transcript is one segment (docs/recipes.md#maven-segments).

avpipe reads the segment times from the cached ``asr`` stage (``segment_times``; Whisper's
segments, at most 30 s each) and adds two things the authors do not need, each named in the docs:

* frames that no authors' segment covers (the floor arithmetic can skip a frame between two
  segments; frames after the last segment's end) form segments of their own, so every frame gets
  a prediction;
* a segment longer than the run's ``window`` (a video without transcript is one segment of the
  whole video) is cut into pieces of at most ``window`` frames every ``hop`` frames, the last
  aligned to the segment's end: the authors attend over a whole 20,000-frame video at once.

Everything here is index arithmetic on the bank's rows (:class:`~avpipe.fusion.windows.Windows`
whose pieces never cross a segment boundary); the model treats each window as one segment.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from avpipe.fusion.windows import Windows, window_starts

#: the frame rate the authors' code assumes when it turns segment times into frames
AUTHORS_FPS = 30.0
SEGMENT_SOURCES = ("asr", "none")


def authors_segment_frames(ends: Sequence[float], n_frames: int, fps: float = AUTHORS_FPS) -> list[tuple[int, int]]:
    """(first frame, frame count) of each transcript segment as the authors compute them: segment k
    starts at ``⌊fps·e_{k−1}⌋`` and has ``⌊fps·(e_k − e_{k−1})⌋`` frames, capped at ``n_frames``;
    segments left with no frame are dropped. No segment at all: one segment of the whole video."""
    n = int(n_frames)
    if n <= 0:
        return []
    out: list[tuple[int, int]] = []
    prev = 0.0
    for e in (float(v) for v in ends):
        start = math.floor(fps * prev)
        length = min(math.floor(fps * (e - prev)), n - start)
        prev = e
        if length > 0 and start < n:
            out.append((start, length))
    return out or [(0, n)]


def segment_spans(ends: Sequence[float], n_frames: int, fps: float = AUTHORS_FPS) -> np.ndarray:
    """(S, 2) ``[start, length]`` covering every frame once, in order: the authors' segments, plus
    one segment for each run of frames none of them covers (a skipped frame, the tail)."""
    n = int(n_frames)
    spans, pos = [], 0
    for s, ln in authors_segment_frames(ends, n, fps):
        if s > pos:
            spans.append((pos, s - pos))
        spans.append((s, ln))
        pos = s + ln
    if 0 < n and pos < n:
        spans.append((pos, n - pos))
    return np.asarray(spans, np.int64).reshape(-1, 2)


def piece_starts(length: int, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(local starts, lengths) of the pieces of a segment of ``length`` frames: the segment itself
    when it fits in ``window``, else windows every ``hop`` frames, the last aligned to its end."""
    _, s, ln = window_starts(np.asarray([length]), window, hop)
    return s, ln


@dataclass
class SegmentPlan:
    """The transcript segment end times of each video (key → seconds); a video absent from
    ``ends`` (no transcript) is one segment. ``fps``: frames per second of the segment arithmetic."""

    ends: dict[str, np.ndarray] = field(default_factory=dict)
    fps: float = AUTHORS_FPS

    def spans(self, video: str, n_frames: int) -> np.ndarray:
        return segment_spans(self.ends.get(video, ()), n_frames, self.fps)

    def windows(self, bank: Any, window: int, hop: int, require_labels: bool = False) -> Windows:
        """The bank's segment pieces as windows (global rows), in video and time order. With
        ``require_labels``, pieces without a labelled frame are dropped (no gradient)."""
        off = bank.offsets.cpu().numpy()
        starts, lens, vids = [], [], []
        for v, video in enumerate(bank.videos):
            n = int(off[v + 1] - off[v])
            for s0, ln in self.spans(video, n):
                s, pl = piece_starts(int(ln), window, hop)
                starts.append(off[v] + s0 + s)
                lens.append(pl)
                vids.append(np.full(len(s), v))
        if not starts:
            z = torch.zeros(0, dtype=torch.long, device=bank.offsets.device)
            return Windows(z, z, z)
        w = Windows(*(torch.from_numpy(np.concatenate(a).astype(np.int64)) for a in (starts, lens, vids)))
        if require_labels:
            c = torch.cat([torch.zeros(1, dtype=torch.long), bank.y_valid.cpu().long().cumsum(0)])
            w = w.select(((c[w.start + w.length] - c[w.start]) > 0).nonzero().squeeze(1))
        dev = bank.offsets.device
        return Windows(w.start.to(dev), w.length.to(dev), w.video.to(dev))


def read_segment_ends(source: Any, videos: Sequence[str], warn: bool = True) -> dict[str, np.ndarray]:
    """Segment end times (seconds) of each video from the cached ``asr`` stage: ``{key: (S,)}``;
    a video whose transcript is empty is left out (one segment). Without any ``asr`` entry the
    run still trains, each video one segment (the authors' no-transcript case), and says so.

    ``source``: a :class:`~avpipe.fusion.source.CacheSource` (its cache is read) or any object
    with ``segment_times(video) -> (S, 2) array | None`` (in-memory sources)."""
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    own = getattr(source, "segment_times", None)
    if own is not None:
        for v in videos:
            st = own(v)
            if st is None:
                missing.append(v)
            elif len(st):
                out[v] = np.asarray(st, np.float64).reshape(-1, 2)[:, 1]
    else:
        from avpipe.fusion.source import FeatureError, StageRef

        cache = getattr(source, "cache", None)
        try:
            fp = source.resolve(StageRef("asr"), list(videos)) if cache is not None else None
        except FeatureError:
            fp = None
        for v in videos:
            e = None
            if fp is not None:
                try:
                    e = cache.read("asr", v, fingerprint=fp)
                except Exception:  # noqa: BLE001 - the store's own not-found error, whatever its class
                    e = None
            if e is None:
                missing.append(v)
            elif "segment_times" in e.extras:
                st = np.asarray(e.extra("segment_times"), np.float64).reshape(-1, 2)
                if len(st):
                    out[v] = st[:, 1]
    if missing and warn:
        warnings.warn(f"{len(missing)} video(s) have no cached 'asr' transcript (e.g. {list(missing)[:3]}): each is "
                      "one segment, as the authors' code treats a video without transcript; run avpipe extract "
                      "--stages asr to train on transcript segments", stacklevel=2)
    return out


def plan_for(cfg: Any, source: Any, videos: Sequence[str]) -> SegmentPlan | None:
    """The run's segment plan when its model takes one sequence per transcript segment (model
    option ``tokens = "segment"``, recorded by :meth:`TrainConfig.resolved`), else None: fixed
    windows."""
    if dict(getattr(cfg, "model", None) or {}).get("tokens") != "segment":
        return None
    return SegmentPlan(read_segment_ends(source, videos))


def legacy_fusion(d: Mapping[str, Any]) -> str | None:
    """The model a run recorded as ``d`` (its config, or a checkpoint) really trained: ``maven``
    runs recorded before ``maven`` became the segment-token model (no ``tokens`` model option)
    trained the per-frame front end, now ``maven-frames``. None: the recorded name stands."""
    if d.get("fusion") != "maven":
        return None
    opts = d.get("model_options", d.get("model"))
    return "maven-frames" if isinstance(opts, Mapping) and "tokens" not in opts else None
