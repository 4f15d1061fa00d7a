"""The ABAW test-set submission file, against a sample-file-shaped fixture."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.fusion.submission import SubmissionError, read_sample, render_submission, write_submission


@pytest.fixture
def sample(tmp_path):
    rows = ["image_location,valence,arousal"]
    rows += [f"video7_left/{i:05d}.jpg," for i in (1, 2, 3)]
    rows += [f"video7_right/{i:05d}.jpg," for i in (1, 2, 3)]
    rows += [f"12-24-1920x1080/{i:05d}.jpg," for i in (1, 3)]
    p = tmp_path / "CVPR_6th_ABAW_VA_test_set_sample.txt"
    p.write_text("\n".join(rows) + "\n")
    return p


PREDS = {"video7_left": np.array([[0.1, 0.2], [0.3, 0.4], [2.0, -3.0]]),
         "video7_right": np.array([[-0.1, -0.2], [-0.3, -0.4], [-0.5, -0.6]]),
         "12-24-1920x1080": np.array([[0.0, 0.5], [0.0, 0.6], [0.0, 0.7]])}


def test_rows_follow_the_sample_and_each_person(sample, tmp_path):
    out = write_submission(sample, tmp_path / "out" / "submission.txt", lambda v: PREDS[v])
    lines = out.read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal"
    assert lines[1:] == ["video7_left/00001.jpg,0.100000,0.200000", "video7_left/00002.jpg,0.300000,0.400000",
                         "video7_left/00003.jpg,1.000000,-1.000000",  # clipped to [-1, 1]
                         "video7_right/00001.jpg,-0.100000,-0.200000", "video7_right/00002.jpg,-0.300000,-0.400000",
                         "video7_right/00003.jpg,-0.500000,-0.600000",
                         "12-24-1920x1080/00001.jpg,0.000000,0.500000", "12-24-1920x1080/00003.jpg,0.000000,0.700000"]


def test_unpredictable_frames_are_named_and_nothing_is_written(sample, tmp_path):
    def pred(v):
        if v == "video7_right":
            raise LookupError("no right person track")
        return PREDS[v][:2]  # video7_left/00003.jpg is beyond the video

    out = tmp_path / "submission.txt"
    with pytest.raises(SubmissionError) as e:
        write_submission(sample, out, pred)
    msg = str(e.value)
    assert "video7_left/00003.jpg" in msg and "video7_right/00001.jpg (no right person track)" in msg
    assert "12-24-1920x1080/00003.jpg" in msg
    assert not out.exists()


@pytest.mark.parametrize("body,match", [("valence,arousal\nv/00001.jpg,\n", "header"),
                                        ("image_location,valence,arousal\nv/1.jpg,\n", "not '<video>/<frame:05d>.jpg'"),
                                        ("image_location,valence,arousal\nv/00000.jpg,\n", "1-based"),
                                        ("image_location,valence,arousal\n", "lists no frames")])
def test_bad_sample_files(tmp_path, body, match):
    p = tmp_path / "s.txt"
    p.write_text(body)
    with pytest.raises(SubmissionError, match=match):
        read_sample(p)


def test_render_reads_each_video_once():
    calls = []

    def pred(v):
        calls.append(v)
        return PREDS[v]

    render_submission([("video7_left/00001.jpg", "video7_left", 1), ("video7_left/00002.jpg", "video7_left", 2)], pred)
    assert calls == ["video7_left"]
