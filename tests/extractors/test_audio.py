"""The audio stage: one PyAV decode to 16 kHz mono on the video clock; absence is data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpipe.extractors.audio import SAMPLE_RATE, Audio, decode_audio
from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.stage import StageResult, VideoRef


def probe_entry(times: np.ndarray, fps: float = 25.0, has_audio: bool = True) -> MemoryEntry:
    return MemoryEntry(StageResult(data=np.asarray(times, np.float64),
                                   attrs={"fps": fps, "n_frames": len(times), "has_audio": has_audio}),
                       stage="probe")


def clip_inputs(clip) -> tuple[VideoRef, dict]:  # noqa: ANN001
    """VideoRef + {'probe', 'audio'} entries built from a committed clip and its ground truth."""
    v = VideoRef(clip.path.name, clip.path.stem, clip.path)
    inputs = {"probe": probe_entry(np.asarray(clip.truth["frame_times"]), clip.truth["fps"])}
    inputs["audio"] = MemoryEntry(Audio().compute(v, inputs), stage="audio")
    return v, inputs


def test_decodes_talking_head_to_16k_mono(talking_head) -> None:
    v, inputs = clip_inputs(talking_head)
    a = inputs["audio"]
    assert a.present and a.attrs["sample_rate"] == SAMPLE_RATE
    y = a.data
    assert y.dtype == np.float32 and y.ndim == 1
    # The AAC track is ~7.7 s (longer than the 7.07 s video); resampled length follows it.
    assert abs(len(y) / SAMPLE_RATE - 7.7) < 0.1
    assert a.attrs["offset_s"] == 0.0 and a.attrs["valid_start_s"] == 0.0
    # Speech starts at 0.5 s: the first 0.4 s are quiet, the next second is not.
    assert np.abs(y[: int(0.4 * SAMPLE_RATE)]).max() < 0.05
    assert np.abs(y[int(0.5 * SAMPLE_RATE): int(1.5 * SAMPLE_RATE)]).max() > 0.1


def test_no_audio_stream_is_absence_not_error(no_face_no_audio) -> None:
    v, inputs = clip_inputs(no_face_no_audio)
    a = inputs["audio"]
    assert not a.present and a.data.size == 0


def test_tone_lands_at_its_time(two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    y = inputs["audio"].data
    env = np.array([np.sqrt(np.mean(y[i:i + 160] ** 2)) for i in range(0, len(y) - 160, 160)])
    loud = np.flatnonzero(env > env.max() / 2) * 0.01
    assert abs(loud.min() - 1.0) < 0.03 and abs(loud.max() - 1.2) < 0.03


def _write_late_audio_clip(path: Path, delay_s: float) -> None:
    """2 s of video at 25 fps plus a tone burst track whose first sample is at ``delay_s``."""
    import av

    sr = 16000
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
        t = np.arange(int(1.0 * sr)) / sr
        sig = np.zeros(int(1.0 * sr), np.float32)
        sig[: int(0.1 * sr)] = 0.5 * np.sin(2 * np.pi * 1000 * t[: int(0.1 * sr)])  # burst at audio t=0
        n0 = int(delay_s * sr)
        for i in range(0, len(sig), 1024):
            chunk = sig[i:i + 1024]
            if len(chunk) < 1024:
                chunk = np.pad(chunk, (0, 1024 - len(chunk)))
            fr = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            fr.sample_rate, fr.pts = sr, n0 + i
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
        for k in range(50):
            img = np.full((48, 64, 3), k * 4, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = k
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)


def test_late_audio_stream_is_padded_onto_video_clock(tmp_path: Path) -> None:
    p = tmp_path / "late.mp4"
    _write_late_audio_clip(p, 0.5)
    y, info = decode_audio(p)
    assert y is not None
    env = np.array([np.sqrt(np.mean(y[i:i + 160] ** 2)) for i in range(0, len(y) - 160, 160)])
    onset = np.flatnonzero(env > env.max() / 2)[0] * 0.01
    # The burst is the first real audio sample, written at pts = 0.5 s: on the video clock it must
    # sit at 0.5 s. (offset_s is a little earlier: the AAC encoder's priming frame.)
    assert abs(onset - 0.5) < 0.03
    assert 0.3 < info["offset_s"] <= 0.5
    assert info["valid_start_s"] == pytest.approx(info["offset_s"], abs=1e-3)
    assert np.all(y[: int(0.3 * SAMPLE_RATE)] == 0)
