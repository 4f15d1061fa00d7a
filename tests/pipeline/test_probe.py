from __future__ import annotations

import shutil

import numpy as np
import pytest

from avpipe.pipeline.probe import Probe
from avpipe.pipeline.stage import StageError, VideoRef
from tests.media import make_audio_only, make_clip, truncate


def _probe(path, key="v.mp4"):
    return Probe().compute(VideoRef(key, "cid", path), {})


def test_timestamps_and_attrs(tmp_path):
    r = _probe(make_clip(tmp_path / "a.mp4", seconds=2, fps=10, audio=True, codec="libx264"))
    assert r.data.dtype == np.float64 and r.data.shape == (20,)
    np.testing.assert_allclose(r.data, np.arange(20) / 10, atol=1e-6)
    a = r.attrs
    assert (a["n_frames"], a["width"], a["height"], a["fps"]) == (20, 64, 48, 10.0)
    assert a["has_audio"] and a["audio_sample_rate"] == 16000 and a["audio_channels"] == 1
    assert a["video_codec"] == "h264" and a["audio_codec"] == "aac"
    assert abs(a["duration"] - 2.0) < 0.1 and "mp4" in a["container"]


def test_no_audio_is_not_an_error(tmp_path):
    r = _probe(make_clip(tmp_path / "a.mp4", seconds=1))
    assert r.attrs["has_audio"] is False and r.attrs["audio_codec"] is None
    assert len(r.data) == 10


@pytest.mark.parametrize("kind,expect", [
    ("empty", "empty file"),
    ("text", "not a readable media file"),
    ("truncated", "truncated"),
    ("audio_only", "no video stream"),
])
def test_bad_inputs_give_clear_errors(tmp_path, clip_bank, kind, expect):
    p = tmp_path / "bad.mp4"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a video\n" * 20)
    elif kind == "truncated":
        shutil.copy(clip_bank / "c0.mp4", p)
        truncate(p, 0.5)
    else:
        make_audio_only(p)
    with pytest.raises(StageError, match=expect) as ei:
        _probe(p, key="dir/bad.mp4")
    assert "dir/bad.mp4" in str(ei.value)
