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
