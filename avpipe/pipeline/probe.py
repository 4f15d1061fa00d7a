"""The ``probe`` stage: container facts and the frame time base every per-frame stage follows.

Timestamps come from demuxing the video stream's packets — no decoding — so probing is cheap and
exact: every non-empty packet with a pts is one frame; pts are sorted (B-frames arrive out of
order), multiplied by the stream time base and taken relative to the stream start. ``n_frames``
(the length of that array) is the row count every per-frame stage must write.

Frames are counted as a player shows them: packets the container's edit list cuts away carry a
*discard* flag (FFmpeg decodes them for reference but never outputs them) and are not frames.
Phone and editor exports often have such edit lists, so the container's declared frame count can
exceed what is shown; that alone never makes a file "truncated". A file is truncated only when
reading actually stops early: a demux error, or — checked by decoding, only when the packets do
not add up to the declared count or one came back cut short — a decode error or frames that end
well before the container's duration. When that decode runs, its frames are the reference.

Bad inputs raise :class:`StageError` with what is wrong in words (empty file, not a media file,
no video stream, truncated), which the runner records per video while the batch goes on.
"""
from __future__ import annotations

import os

from collections.abc import Mapping
from typing import Any

import numpy as np

from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage


def _fraction(x: Any) -> float | None:
    try:
        return float(x) if x else None
    except (TypeError, ZeroDivisionError):
        return None


def _demux_pts(container: Any, vs: Any, key: str) -> tuple[list[int], int, bool]:
    """(pts of the frames a player shows, packets stored incl. discarded, a packet was cut short)."""
    import av

    pts: list[int] = []
    stored = 0
    cut_short = False
    try:
        for pkt in container.demux(vs):
            if pkt.pts is None or not pkt.size:
                continue
            stored += 1
            cut_short = cut_short or bool(getattr(pkt, "is_corrupt", False))
            if getattr(pkt, "is_discard", False):  # before the edit list's start: never shown
                continue
            pts.append(int(pkt.pts))
    except av.error.FFmpegError as e:
        raise StageError(f"{key}: error while reading packets after {len(pts)} "
                         f"frames ({type(e).__name__}: {e}); the file is damaged or truncated") from e
    return pts, stored, cut_short


def _decoded_pts(path: Any, key: str, declared: int, container_duration: int | None) -> list[int]:
    """Decode the video stream (the slow reference, only for files whose packets do not add up)
    and return the pts of the frames it outputs; raise if decoding stops early."""
    import av

    pts: list[int] = []
    with av.open(str(path), mode="r") as c:
        vs = c.streams.video[0]
        tb = float(vs.time_base) if vs.time_base else 0.0
        try:
            for i, fr in enumerate(c.decode(vs)):
                pts.append(int(fr.pts) if fr.pts is not None else (pts[-1] + 1 if pts else i))
        except av.error.FFmpegError as e:
            raise StageError(f"{key} is truncated or damaged: decoding stops after {len(pts)} of "
                             f"{declared or '?'} declared frames ({type(e).__name__}: {e})") from e
        if pts and tb and container_duration:
            start = min(min(pts), int(vs.start_time or 0))
            shown_s = (max(pts) - start) * tb
            frame_s = float(1 / vs.average_rate) if vs.average_rate else 0.0
            total_s = container_duration / 1_000_000
            if shown_s + frame_s < total_s - max(0.5, 0.1 * total_s):
                raise StageError(f"{key} is truncated: its frames end at {shown_s:.2f} s but the "
                                 f"container lasts {total_s:.2f} s ({len(pts)} of {declared or '?'} "
                                 "declared frames could be read)")
    return pts


@register_stage
class Probe(Stage):
    name = "probe"
    version = "1"
    requires = ()
    per_frame = True
    videos_per_task = 32  # cheap: amortise task overhead
    description = "container facts and per-frame presentation timestamps (the frame time base)"

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        import av

        path = video.path
        try:
            size = path.stat().st_size
        except OSError as e:
            raise StageError(f"cannot read {video.key}: {e.strerror or e}") from e
        if size == 0:
            raise StageError(f"{video.key} is an empty file (0 bytes)")
        try:
            container = av.open(str(path), mode="r")
        except av.error.FFmpegError as e:
            if isinstance(e, PermissionError) or not os.access(path, os.R_OK):
                raise StageError(f"cannot read {video.key}: permission denied (fix its permissions; "
                                 "the file itself may be fine)") from e
            raise StageError(f"{video.key} is not a readable media file "
                             f"({type(e).__name__}: {e}); truncated or not a video?") from e
        with container:
            vstreams = container.streams.video
            astreams = container.streams.audio
            if not vstreams:
                raise StageError(f"no video stream in {video.key}"
                                 + (" (audio only)" if astreams else ""))
            vs = vstreams[0]
            pts, stored, cut_short = _demux_pts(container, vs, video.key)
            declared = int(vs.frames or 0)
            if cut_short or (declared and stored < declared):
                pts = _decoded_pts(path, video.key, declared, container.duration)
            if not pts:
                raise StageError(f"{video.key}: the video stream has no frames (empty or truncated)")
            tb = float(vs.time_base) if vs.time_base else None
            if tb is None:
                raise StageError(f"{video.key}: video stream has no time base")
            arr = np.sort(np.asarray(pts, dtype=np.int64))
            start = vs.start_time if vs.start_time is not None else int(arr[0])
            start = min(int(start), int(arr[0]))
            ts = (arr - start).astype(np.float64) * tb
            fps = _fraction(vs.average_rate) or _fraction(vs.guessed_rate)
            if fps is None and len(ts) > 1 and ts[-1] > ts[0]:
                fps = (len(ts) - 1) / float(ts[-1] - ts[0])
            if container.duration:
                duration = container.duration / 1_000_000
            elif vs.duration:
                duration = float(vs.duration * vs.time_base)
            else:
                duration = float(ts[-1] + (1.0 / fps if fps else 0.0))
            a = astreams[0] if astreams else None
            actx = a.codec_context if a is not None else None
            attrs: dict[str, Any] = {
                "fps": fps,
                "n_frames": int(len(ts)),
                "duration": float(duration),
                "width": int(vs.codec_context.width),
                "height": int(vs.codec_context.height),
                "has_video": True,
                "has_audio": a is not None,
                "audio_sample_rate": int(actx.sample_rate) if actx is not None and actx.sample_rate else None,
                "audio_channels": (int(actx.layout.nb_channels) if actx is not None and actx.layout
                                   else (int(getattr(actx, "channels", 0)) or None) if actx is not None else None),
                "video_codec": vs.codec_context.name,
                "audio_codec": actx.name if actx is not None else None,
                "container": container.format.name,
                "time_base": str(vs.time_base),
                "file_size": int(size),
            }
        return StageResult(data=ts, attrs=attrs)
