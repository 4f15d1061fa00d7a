"""Aff-Wild2 folders, _left/_right mapping, length tolerance, CSV form, splits."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.fusion.labels import (LabelError, LabelLengthError, assign_splits, load_labels, match_videos,
                                  source_video_stem)


def _write(p, rows):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("valence,arousal\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n")


def test_affwild2_folder_splits_and_left_right(tmp_path):
    _write(tmp_path / "Train_Set" / "10-60-1280x720_left.txt", [(0.1, 0.2)] * 5)
    _write(tmp_path / "Train_Set" / "10-60-1280x720_right.txt", [(-5, -5)] * 2 + [(0.3, 0.4)] * 3)
    _write(tmp_path / "Validation_Set" / "video7.txt", [(0.5, -0.5)] * 4)
    tracks = {t.name: t for t in load_labels(tmp_path)}
    assert tracks["10-60-1280x720_left"].split == "train" and tracks["video7"].split == "val"
    assert tracks["10-60-1280x720_left"].video_stem == "10-60-1280x720"
    assert tracks["10-60-1280x720_right"].valid.tolist() == [False, False, True, True, True]
    m = match_videos(tracks.values(), ["batch1/10-60-1280x720.mp4", "batch2/video7.avi"])
    assert m == {"10-60-1280x720_left": "batch1/10-60-1280x720.mp4",
                 "10-60-1280x720_right": "batch1/10-60-1280x720.mp4", "video7": "batch2/video7.avi"}
    assert source_video_stem("_left") == "_left"


def test_ambiguous_video_stem_is_an_error(tmp_path):
    _write(tmp_path / "Train_Set" / "x.txt", [(0, 0)])
    with pytest.raises(LabelError, match="several videos"):
        match_videos(load_labels(tmp_path), ["a/x.mp4", "b/x.mp4"])


def test_length_tolerance(tmp_path):
    _write(tmp_path / "Train_Set" / "v.txt", [(0.1, 0.1)] * 100)
    t = load_labels(tmp_path)[0]
    longer = t.aligned(97, tolerance=5)
    assert longer.shape == (97, 2)
    shorter = t.aligned(104, tolerance=5)
    assert shorter.shape == (104, 2) and np.all(shorter[100:] == -5)
    with pytest.raises(LabelLengthError, match=r"has 100 frames but video 'v' has 120"):
        t.aligned(120, tolerance=5)


def test_csv_form_and_split_file(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("video,frame,valence,arousal\na.mp4,0,0.1,0.2\na.mp4,2,0.3,0.4\nclips/b_left.mp4,1,0.5,0.6\n")
    tracks = {t.name: t for t in load_labels(p)}
    a = tracks["a.mp4"]
    assert a.values.shape == (3, 2) and a.valid.tolist() == [True, False, True]
    assert tracks["clips/b_left.mp4"].video_stem == "b"
    sf = tmp_path / "split.csv"
    sf.write_text("name,split\na,Validation_Set\n")
    with pytest.warns(UserWarning, match="not in the split file"):
        assign_splits(list(tracks.values()), sf)
    assert a.split == "val"  # by video stem
    assert tracks["clips/b_left.mp4"].split in ("train", "val")


def test_hash_split_keeps_left_right_together(tmp_path):
    for i in range(30):
        for side in ("_left", "_right"):
            _write(tmp_path / f"v{i}{side}.txt", [(0, 0)])
    tracks = assign_splits(load_labels(tmp_path), val_fraction=0.3, seed=1)
    by = {}
    for t in tracks:
        by.setdefault(t.video_stem, set()).add(t.split)
    assert all(len(s) == 1 for s in by.values())
    assert {"train", "val"} <= {t.split for t in tracks}


@pytest.mark.parametrize("body,line,msg", [
    ("valence,arousal\n0.1,0.2\n3.0,0.1\n", 3, r"value 3 outside \[-1, 1\]"),
    ("valence,arousal\n0.1,1e30\n", 2, r"value 1e\+30 outside \[-1, 1\]"),
    ("valence,arousal\n0.1,0.2\n0.1,0.2,0.3\n", 3, "expected 2 columns"),
    ("valence,arousal\n0.1,0.2\n\n0.3,0.4\n", 3, "blank line between label rows"),
    ("valence,arousal\n0.1,abc\n", 2, "not a number"),
])
def test_malformed_affwild2_rows_name_file_and_line(tmp_path, body, line, msg):
    p = tmp_path / "Train_Set" / "v.txt"
    p.parent.mkdir()
    p.write_text(body)
    with pytest.raises(LabelError, match=rf"v\.txt:{line}: .*{msg}|v\.txt:{line}: {msg}"):
        load_labels(tmp_path)


def test_valid_edge_values_and_trailing_blank_lines_are_accepted(tmp_path):
    _write(tmp_path / "v.txt", [(-1, 1), (-5, -5), (0.0, -0.999)])
    p = tmp_path / "v.txt"
    p.write_text(p.read_text() + "\n\n")
    t = load_labels(tmp_path)[0]
    assert t.values.shape == (3, 2) and t.valid.tolist() == [True, False, True]


def test_binary_label_file_is_a_clear_error(tmp_path):
    (tmp_path / "v.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary")
    with pytest.raises(LabelError, match=r"v\.txt: not a UTF-8 text file"):
        load_labels(tmp_path)
    (tmp_path / "v.txt").write_bytes(b"valence,arousal\n0.1,0.2\x00\x00\n")
    with pytest.raises(LabelError, match=r"v\.txt: binary file"):
        load_labels(tmp_path)


@pytest.mark.parametrize("row,msg", [("a.mp4,0,0.1,2.5", "outside"), ("a.mp4,0,0.1", "expected 4 columns"),
                                     ("a.mp4,x,0.1,0.2", "invalid literal")])
def test_malformed_csv_rows_name_file_and_line(tmp_path, row, msg):
    p = tmp_path / "labels.csv"
    p.write_text(f"video,frame,valence,arousal\na.mp4,1,0.1,0.2\n{row}\n")
    with pytest.raises(LabelError, match=rf"labels\.csv:3: .*{msg}"):
        load_labels(p)
    p.write_bytes(b"video,frame,valence,arousal\n\xff\xfe")
    with pytest.raises(LabelError, match="not a UTF-8 text file"):
        load_labels(p)


def test_label_length_hint_names_a_real_train_flag(tmp_path):
    import re

    from click.testing import CliRunner

    from avpipe.cli import main

    _write(tmp_path / "v.txt", [(0.1, 0.1)] * 100)
    with pytest.raises(LabelLengthError) as ei:
        load_labels(tmp_path)[0].aligned(150, tolerance=5)
    flags = re.findall(r"--[a-z][a-z-]+", str(ei.value))
    assert flags, str(ei.value)
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert all(f in help_text for f in flags), (flags, help_text)


def test_clip_labels_option_clips_and_warns_once(tmp_path):
    p = tmp_path / "Train_Set" / "v.txt"
    p.parent.mkdir()
    p.write_text("valence,arousal\n1.2,0.1\n-5,-5\n-3.0,0.5\n")
    with pytest.raises(LabelError, match="--clip-labels"):
        load_labels(tmp_path)
    with pytest.warns(UserWarning, match=r"2 value\(s\) outside \[-1, 1\] clipped"):
        t = load_labels(tmp_path, clip=True)[0]
    assert t.values.tolist() == [[1.0, pytest.approx(0.1)], [-5.0, -5.0], [-1.0, 0.5]]


def test_split_file_separating_the_sides_of_a_video_is_an_error(tmp_path):
    """A split file put X_left in train and X_right in val (same audio, same scene): accepted
    silently, although both sides always share a split."""
    _write(tmp_path / "lab" / "X_left.txt", [(0.1, 0.2)] * 3)
    _write(tmp_path / "lab" / "X_right.txt", [(0.1, 0.2)] * 3)
    _write(tmp_path / "lab" / "Y.txt", [(0.1, 0.2)] * 3)
    sf = tmp_path / "split.csv"
    sf.write_text("name,split\nX_left,train\nX_right,val\nY,val\n")
    with pytest.raises(LabelError, match=r"'X_left' in train and 'X_right' in val.*video 'X'"):
        assign_splits(load_labels(tmp_path / "lab"), sf)
    sf.write_text("name,split\nX,train\nY,val\n")  # by video: both sides together
    tracks = {t.name: t for t in assign_splits(load_labels(tmp_path / "lab"), sf)}
    assert tracks["X_left"].split == tracks["X_right"].split == "train"
