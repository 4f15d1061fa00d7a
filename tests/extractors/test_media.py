"""The shared frame decoder: what every per-frame stage's rows, ``render`` and the benchmarks count."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from avpipe.extractors.media import iter_frames


def _decoders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "avpipe-decode" and t.is_alive()]


def test_frames_in_order_rgb_and_as_many_as_the_clip_has(short_silent):
    frames = list(iter_frames(short_silent.path))
    w, h = short_silent.truth["size"]
    assert len(frames) == short_silent.truth["n_frames"]
    assert all(f.shape == (h, w, 3) and f.dtype == np.uint8 for f in frames)
    again = list(iter_frames(short_silent.path, prefetch=1))  # the queue size changes nothing
    assert all(np.array_equal(a, b) for a, b in zip(frames, again)) and len(again) == len(frames)


def test_stopping_early_ends_the_decoding_thread(talking_head):
    before = len(_decoders())
    it = iter_frames(talking_head.path, prefetch=2)
    next(it)  # the producer now waits on a full queue
    it.close()
    deadline = time.monotonic() + 10
    while len(_decoders()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_decoders()) == before


def test_a_file_that_is_not_a_video_raises_in_the_caller(tmp_path):
    import av

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(av.error.FFmpegError):
        list(iter_frames(bad))
