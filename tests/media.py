"""Tiny real media files for tests, made with PyAV (offline, deterministic, a few KB each).

Richer sample media (faces, speech) lives in ``avpipe.sample.media``; these stay minimal (noise
frames, a sine) so pipeline tests are fast. Audio encoding is shared with it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avpipe.sample.media import encode_mono_audio


def make_clip(path: str | Path, *, seconds: float = 1.0, fps: int = 10, width: int = 64,
              height: int = 48, audio: bool = False, seed: int = 0, codec: str = "mpeg4",
              sample_rate: int = 16000, tone_hz: float = 440.0) -> Path:
    """Write a small video (moving gradient; ``seed`` changes the bytes) and return its path.

    ``audio=True`` adds an AAC sine track.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fps))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        a = None
        if audio:
            a = out.add_stream("aac", rate=sample_rate)
            a.layout = "mono"
        for i in range(n):
            img = np.roll(base, i * 3, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if a is not None:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            encode_mono_audio(out, a, (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32), sample_rate)
    return path


def make_audio_only(path: str | Path, *, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """An AAC-in-MP4 file with no video stream."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as out:
        a = out.add_stream("aac", rate=sample_rate)
        a.layout = "mono"
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        encode_mono_audio(out, a, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate)
    return path


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a download that died half-way)."""
    p = Path(path)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    return p
