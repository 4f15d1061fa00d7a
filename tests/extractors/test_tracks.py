"""Person tracks: the pure rules (matching, re-identification, left/right binding)."""
from __future__ import annotations

import numpy as np

from avpipe.extractors.tracking import bind_sides, match_tracks, reidentify


def test_bind_sides_by_median_centre_x():
    assert bind_sides({0: (100, 300.0), 1: (100, 80.0)}) == {"left": 1, "right": 0}
    assert bind_sides({3: (50, 10.0), 7: (60, 500.0)}) == {"left": 3, "right": 7}


def test_bind_sides_robust_to_a_brief_crossing():
    # person A sits left (x=100) but crosses to x=400 for 10 of 100 frames; B sits right (x=300)
    xa = np.r_[np.full(90, 100.0), np.full(10, 400.0)]
    xb = np.r_[np.full(90, 300.0), np.full(10, 50.0)]
    assert np.mean(xa) < np.mean(xb)
    sides = bind_sides({0: (100, float(np.median(xa))), 1: (100, float(np.median(xb)))})
    assert sides == {"left": 0, "right": 1}


def test_bind_sides_ignores_passers_by_and_needs_two_people():
    # a passer-by at the far left (12 frames) does not take a side from the two main people
    assert bind_sides({0: (300, 400.0), 1: (290, 200.0), 2: (12, 5.0)}) == {"left": 1, "right": 0}
    assert bind_sides({0: (300, 400.0)}) == {}
    assert bind_sides({}) == {}


def test_match_tracks_one_to_one_by_iou():
    prev = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    dets = np.array([[21, 0, 31, 10], [1, 0, 11, 10], [100, 100, 110, 110]], float)
    assert match_tracks(prev, dets, 0.3) == {0: 1, 1: 0}
    # two detections near one track: only the better one gets it
    assert match_tracks(prev[:1], np.array([[1, 0, 11, 10], [0, 0, 10, 10]], float), 0.3) == {1: 0}
    assert match_tracks(np.zeros((0, 4)), dets, 0.3) == {}


def test_reidentify_short_gap_near_and_same_size_only():
    lost = [(4, np.array([100, 100, 150, 150], float), 10), (9, np.array([0, 0, 50, 50], float), 10)]
    assert reidentify(np.array([110, 105, 160, 155], float), lost, 30, max_gap=75) == 4
    assert reidentify(np.array([110, 105, 160, 155], float), lost, 200, max_gap=75) is None  # gap too long
    assert reidentify(np.array([300, 300, 350, 350], float), lost, 30, max_gap=75) is None  # elsewhere
    assert reidentify(np.array([100, 100, 250, 250], float), lost, 30, max_gap=75) is None  # 3x bigger


def test_faces_keeps_a_persons_identity_across_a_short_absence(tmp_path):
    """Real media: the left person leaves for 1.2 s and comes back as the same track.

    A person (re)appearing between key frames is picked up at the next key frame (row 30 here,
    ``key_interval`` 30), so the left track has no rows 12-29 and one identity before and after.
    """
    from avpipe.extractors.faces import Faces
    from avpipe.extractors.media import iter_frames
    from avpipe.sample.media import write_clip
    from tests.affwild2_fixture import FPS, N_FRAMES, frames

    path = tmp_path / "video20.mp4"
    write_clip(path, frames("video20", hide={"left": range(12, 24)}), fps=FPS)
    res = Faces().process(iter_frames(path), N_FRAMES)
    tracks = {t["id"]: t for t in res.attrs["tracks"]}
    sides = res.attrs["sides"]
    assert len(tracks) == 2 and set(sides) == {"left", "right"}
    left = tracks[sides["left"]]
    assert left["first"] == 0 and left["last"] == N_FRAMES - 1  # one identity before and after the gap
    lmask = res.extras["track_mask"][list(res.extras["track_ids"]).index(sides["left"])]
    assert lmask[:12].all() and not lmask[12:24].any() and lmask[30:].all()
    assert tracks[sides["right"]]["frames"] == N_FRAMES
