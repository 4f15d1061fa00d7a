"""Talking-head clips made offline: a real face photograph animated, real synthetic speech.

Used by the tests (fixtures with known ground truth: where the face is, when each word is
spoken, where a tone burst sits) and by ``avpipe sample``. The face is scikit-image's astronaut
(NASA, public domain); speech comes from :mod:`avpipe.sample.speech`. PyAV muxes H.264 + AAC, so
no ``ffmpeg`` program is needed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Where the astronaut's face sits in skimage.data.astronaut() (512×512): eyes and face box,
# measured once with MTCNN (p = 0.999998).
ASTRONAUT_FACE_BOX = (165.0, 60.0, 265.0, 190.0)  # x0, y0, x1, y1 (approximate)


@dataclass
class ClipInfo:
    """What was written, for tests to check against."""

    path: Path
    n_frames: int
    fps: float
    size: tuple[int, int]  # width, height
    frame_times: np.ndarray  # seconds of each frame
    audio_rate: int | None = None
    words: list[tuple[str, float, float]] = field(default_factory=list)  # (word, start, end)
    n_faces: int = 1
    tone: tuple[float, float, float] | None = None  # (start_s, duration_s, freq_hz)


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # (512, 512, 3) uint8 RGB


def _background(w: int, h: int, t: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 90 + 40 * np.sin(xx / 57.0 + t)
    g = 110 + 30 * np.cos(yy / 43.0 - 0.5 * t)
    b = 130 + 35 * np.sin((xx + yy) / 91.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def face_frames(n_frames: int, size: tuple[int, int] = (480, 360), *, n_faces: int = 1,
                fps: float = 25.0, mirror: bool = False, zoom: float = 1.0,
                brightness: Callable[[float], float] | None = None,
                expression: Callable[[float], float] | None = None) -> Iterable[np.ndarray]:
    """Frames (H, W, 3) uint8 RGB of 0, 1 or 2 astronaut faces with a slow zoom and drift.

    ``brightness(t)`` scales lighting; ``expression(t)`` in [-1, 1] bends the mouth region up or
    down (a crude visual cue the sample corpus ties to valence).
    """
    import cv2

    w, h = size
    src = astronaut()
    if mirror:
        src = src[:, ::-1].copy()
    for i in range(n_frames):
        t = i / fps
        frame = _background(w, h, t)
        if n_faces > 0:
            placements = [(0.5, 1.0)] if n_faces == 1 else [(0.28, 0.62), (0.75, 0.45)][:n_faces]
            for cx_frac, rel in placements:
                s = zoom * rel * (h / 512.0) * 1.25 * (1.0 + 0.04 * np.sin(2 * np.pi * t / 5.0))
                dx = 6.0 * np.sin(2 * np.pi * t / 4.0)
                dy = 4.0 * np.cos(2 * np.pi * t / 6.0)
                # Centre the face box (not the image) at the placement point.
                fx = (ASTRONAUT_FACE_BOX[0] + ASTRONAUT_FACE_BOX[2]) / 2
                fy = (ASTRONAUT_FACE_BOX[1] + ASTRONAUT_FACE_BOX[3]) / 2
                if mirror:
                    fx = 512 - fx
                tx = cx_frac * w - s * fx + dx
                ty = 0.45 * h - s * fy + dy
                m = np.array([[s, 0, tx], [0, s, ty]], np.float32)
                warped = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                cover = cv2.warpAffine(np.full(src.shape[:2], 255, np.uint8), m, (w, h)) > 0
                if expression is not None:
                    e = float(np.clip(expression(t), -1, 1))
                    mx, my = fx * s + tx, (ASTRONAUT_FACE_BOX[3] - 45) * s + ty
                    rad = max(2, int(14 * s))
                    axes = (max(2, int(22 * s)), max(1, int(abs(e) * 9 * s) + 1))
                    cv2.ellipse(warped, (int(mx), int(my)), axes, 0, 0 if e > 0 else 180,
                                180 if e > 0 else 360, (120, 40, 40), max(1, rad // 5))
                frame[cover] = warped[cover]
        if brightness is not None:
            frame = np.clip(frame.astype(np.float32) * float(brightness(t)), 0, 255).astype(np.uint8)
        yield frame


def write_clip(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 25.0,
               audio: np.ndarray | None = None, audio_rate: int = 22050,
               frame_times: Sequence[float] | None = None, codec: str = "libx264",
               crf: int = 28) -> np.ndarray:
    """Mux frames (and optional mono float/int16 audio) into ``path``; returns frame times.

    With ``frame_times`` the video is variable-frame-rate: each frame gets that pts (ms base).
    """
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    times: list[float] = []
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        vs.pix_fmt = "yuv420p"
        if codec in ("libx264", "h264"):
            vs.options = {"crf": str(crf), "preset": "veryfast"}
        if frame_times is not None:
            vs.codec_context.time_base = Fraction(1, 1000)
        ast = None
        if audio is not None:
            ast = out.add_stream("aac", rate=audio_rate)
            ast.layout = "mono"
        first = True
        for i, rgb in enumerate(frames):
            if first:
                vs.height, vs.width = rgb.shape[:2]
                first = False
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if frame_times is not None:
                vf.pts = int(round(frame_times[i] * 1000))
                vf.time_base = Fraction(1, 1000)
                times.append(frame_times[i])
            else:
                times.append(i / fps)
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if ast is not None and audio is not None:
            encode_mono_audio(out, ast, audio, audio_rate)
    return np.asarray(times, dtype=np.float64)


def encode_mono_audio(out: Any, stream: Any, audio: np.ndarray, rate: int) -> None:
    """Encode mono float (or int16) samples into an open PyAV ``stream`` of container ``out``."""
    import av
    from fractions import Fraction

    a = np.asarray(audio)
    a = (a.astype(np.float32) / 32768.0) if a.dtype == np.int16 else a.astype(np.float32)
    for s in range(0, len(a), 1024):
        af = av.AudioFrame.from_ndarray(a[None, s:s + 1024], format="flt", layout="mono")
        af.sample_rate = rate
        af.pts = s
        af.time_base = Fraction(1, rate)
        for p in stream.encode(af):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


DEFAULT_TEXT = ("Hello, my name is Alex. I am recording this short video "
                "to test the audio visual feature pipeline.")


def talking_head(path: str | Path, *, text: str | None = DEFAULT_TEXT, seconds: float | None = None,
                 fps: float = 25.0, size: tuple[int, int] = (480, 360), n_faces: int = 1,
                 audio: bool = True, silence: bool = False,
                 tone: tuple[float, float, float] | None = None, vfr: bool = False,
                 lead_in: float = 0.5, speech_kwargs: dict | None = None,
                 frame_kwargs: dict | None = None, codec: str = "libx264") -> ClipInfo:
    """Write a talking-head clip and return its ground truth.

    * ``text``: spoken with espeak-ng starting ``lead_in`` seconds in (None: no speech);
    * ``seconds``: clip length (default: speech + 0.5 s, or 2 s without speech);
    * ``n_faces``: 0, 1 or 2 astronaut faces; ``audio=False``: no audio stream at all;
    * ``silence``: an audio stream of zeros; ``tone``: (start_s, dur_s, freq_hz) sine burst;
    * ``vfr``: variable frame rate (frame intervals alternate around 1/fps).
    """
    sr = 22050
    words: list[tuple[str, float, float]] = []
    wave = None
    if audio:
        speech_len = 0.0
        if text and not silence:
            from avpipe.sample.speech import synthesize

            sp = synthesize(text, **(speech_kwargs or {}))
            sr = sp.sample_rate
            speech_len = sp.duration
            words = [(w, s + lead_in, e + lead_in) for w, s, e in sp.words]
        total = seconds if seconds is not None else (lead_in + speech_len + 0.5 if speech_len else 2.0)
        wave = np.zeros(int(round(total * sr)), np.float32)
        if text and not silence:
            pcm = sp.samples.astype(np.float32) / 32768.0
            a = int(lead_in * sr)
            n = min(len(pcm), len(wave) - a)
            if n > 0:
                wave[a:a + n] = pcm[:n]
            words = [w for w in words if w[1] < total]
        if tone is not None:
            t0, dur, freq = tone
            a, b = int(t0 * sr), int(min(total, t0 + dur) * sr)
            tt = np.arange(b - a) / sr
            wave[a:b] += 0.5 * np.sin(2 * np.pi * freq * tt).astype(np.float32)
    else:
        total = seconds if seconds is not None else 2.0
    n_frames = max(1, int(round(total * fps)))
    frame_times = None
    if vfr:
        base = 1.0 / fps
        steps = np.where(np.arange(n_frames) % 3 == 2, base * 1.8, base * 0.6)
        frame_times = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
        frame_times = frame_times[frame_times < total]
        n_frames = len(frame_times)
    frames = face_frames(n_frames, size, n_faces=n_faces, fps=fps, **(frame_kwargs or {}))
    times = write_clip(path, frames, fps=fps, audio=wave, audio_rate=sr,
                       frame_times=None if frame_times is None else list(frame_times), codec=codec)
    return ClipInfo(path=Path(path), n_frames=n_frames, fps=fps, size=size, frame_times=times,
                    audio_rate=sr if audio else None, words=words, n_faces=n_faces, tone=tone)
