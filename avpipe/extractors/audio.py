"""The ``audio`` stage: the audio track decoded once to 16 kHz mono float32, on the video's clock.

Why one decode: ``logmel``, ``vggish`` and ``asr`` all read the same waveform; decoding (PyAV,
never an ``ffmpeg`` program) and resampling once keeps them consistent and cheap.

Alignment: sample 0 of ``data`` is the video's time 0, i.e. the first video frame's presentation
time as the ``probe`` stage defines it (video stream start). The audio stream may start earlier or
later than the video stream (``start_time`` differs, or the first decoded audio frame has a later
pts); the offset ``audio_start - video_start`` is compensated by padding zeros in front (audio
starts late) or trimming the head (audio starts early). The applied offset is stored in
``attrs["offset_s"]``, and the span that holds real audio (not padding) in
``attrs["valid_start_s"]``/``attrs["valid_end_s"]``, so downstream windows can tell audio from
padding.

No audio stream: ``data`` is empty and ``attrs["present"] = False``. That is absence, not an
error; downstream per-frame audio stages write n_frames masked rows.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from avpipe.pipeline.config_schema import Int, config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

SAMPLE_RATE = 16000


@config_dataclass
class AudioConfig:
    """Semantic options. The rate is fixed at 16 kHz because Whisper and VGGish expect it."""

    stream: Annotated[Int, Field(ge=0, description="which audio stream (index among the container's audio "
                                                   "streams)")] = 0


def decode_audio(path: str | Path, stream: int = 0, sample_rate: int = SAMPLE_RATE
                 ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Decode ``path``'s audio stream to mono float32 at ``sample_rate``, on the video clock.

    Returns (samples or None when there is no audio stream, facts). Samples start at the video's
    time 0 (see module docstring).
    """
    import av

    info: dict[str, Any] = {}
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise StageError(f"{path}: not a readable media file ({type(e).__name__}: {e})") from e
    with container:
        astreams = container.streams.audio
        if len(astreams) <= stream:
            return None, info
        a = astreams[stream]
        video_start = 0.0
        if container.streams.video:
            vs = container.streams.video[0]
            if vs.start_time is not None and vs.time_base:
                video_start = float(vs.start_time * vs.time_base)
        info["source_sample_rate"] = int(a.codec_context.sample_rate or 0) or None
        info["source_channels"] = int(a.codec_context.layout.nb_channels) if a.codec_context.layout else None
        info["codec"] = a.codec_context.name
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        audio_start: float | None = None
        try:
            for frame in container.decode(a):
                if audio_start is None:
                    if frame.pts is not None and frame.time_base:
                        audio_start = float(frame.pts * frame.time_base)
                    elif a.start_time is not None and a.time_base:
                        audio_start = float(a.start_time * a.time_base)
                    else:
                        audio_start = video_start
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise StageError(f"{path}: error while decoding audio ({type(e).__name__}: {e})") from e
    y = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    offset = (audio_start if audio_start is not None else video_start) - video_start
    shift = int(round(offset * sample_rate))
    if shift > 0:
        y = np.concatenate([np.zeros(shift, np.float32), y])
    elif shift < 0:
        y = y[-shift:]
    info["offset_s"] = offset
    info["valid_start_s"] = max(shift, 0) / sample_rate
    info["valid_end_s"] = len(y) / sample_rate
    return np.ascontiguousarray(y), info


@register_stage
class Audio(Stage):
    name = "audio"
    version = "1"
    config_cls = AudioConfig
    requires = ("probe",)
    per_frame = False
    videos_per_task = 16
    description = "audio track decoded once (PyAV) to 16 kHz mono float32, sample 0 = video time 0"

    @classmethod
    def row_times(cls, entry: Any, frame_times: Any) -> np.ndarray:
        """Sample ``i`` is at ``i / sample_rate`` seconds (sample 0 = video time 0)."""
        sr = float(entry.attrs.get("sample_rate") or SAMPLE_RATE)
        n = int(entry.attrs.get("n_samples", np.shape(entry.data)[0] if np.ndim(entry.data) else 0))
        return np.arange(n, dtype=np.float64) / sr

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        y, info = decode_audio(video.path, self.config.stream)
        if y is None:
            return StageResult(data=np.zeros(0, np.float32),
                               attrs={"present": False, "sample_rate": SAMPLE_RATE, "n_samples": 0,
                                      "duration": 0.0})
        attrs = {"present": True, "sample_rate": SAMPLE_RATE, "n_samples": int(len(y)),
                 "duration": len(y) / SAMPLE_RATE, "alignment": "sample 0 = video time 0", **info}
        return StageResult(data=y, attrs=attrs)


def audio_from(inputs: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(waveform, attrs) from an ``audio`` entry, or None when the video has no audio.

    The waveform is read as a fresh array the entry does not keep (a shard entry's ``data`` is
    cached on first access), so a stage that drops its array frees the memory: 230 MB for an hour
    at 16 kHz."""
    e = inputs.get("audio")
    if e is None or not e.present:
        return None
    return np.asarray(e.read_rows(0, None), dtype=np.float32).reshape(-1), e.attrs


def frame_times(inputs: Mapping[str, Any]) -> np.ndarray:
    """The probe's per-frame timestamps (seconds): the row base of every per-frame stage."""
    p = inputs.get("probe")
    if p is None:
        raise StageError("the probe stage's output is missing from the inputs")
    return np.asarray(p.data, dtype=np.float64).reshape(-1)
