"""O-net tracking (``track_onet_inputs`` > 0): O-net alone on the last cascade's inputs, moved
with the face, on tracked frames; the window cascade when O-net is unsure."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.extractors.faces import Faces, FacesConfig
from avpipe.extractors.media import iter_frames
from avpipe.extractors.mtcnn import Cascade, MtcnnEngine
from avpipe.extractors.tracking import iou


@pytest.fixture(scope="module")
def th_frames(talking_head):
    return [f for _, f in zip(range(40), iter_frames(talking_head.path))]


def test_off_by_default_and_then_absent_from_the_key():
    """Off, the output is version 4's: the fingerprint's config must not change either."""
    assert FacesConfig().track_onet_inputs == 0
    d = Faces().semantic_config()
    assert "track_onet_inputs" not in d and "track_onet_min_prob" not in d
    on = Faces(FacesConfig(track_onet_inputs=3)).semantic_config()
    assert on["track_onet_inputs"] == 3 and on["track_onet_min_prob"] == 0.9
    assert Faces(FacesConfig(track_onet_inputs=3, track_onet_min_prob=0.5)).semantic_config() != on
    with pytest.raises(ValueError):
        FacesConfig(track_onet_inputs=-1)


def test_tracks_the_face_close_to_per_frame_mtcnn_with_few_cascades(th_frames, monkeypatch):
    calls = {"roi": 0, "onet": 0}
    roi, onet = MtcnnEngine.roi_cascade, MtcnnEngine.onet_track

    def count_roi(self, *a, **k):
        calls["roi"] += 1
        return roi(self, *a, **k)

    def count_onet(self, *a, **k):
        calls["onet"] += 1
        return onet(self, *a, **k)

    monkeypatch.setattr(MtcnnEngine, "roi_cascade", count_roi)
    monkeypatch.setattr(MtcnnEngine, "onet_track", count_onet)
    n = len(th_frames)
    fast = Faces(FacesConfig(track_onet_inputs=3)).process(iter(th_frames), n)
    used = dict(calls)
    naive = Faces(FacesConfig(key_interval=1, detect_max_side=None)).process(iter(th_frames), n)
    assert fast.mask.all() and naive.mask.all()
    # P-net ran on the key frames and on the first frame after each (to anchor O-net), not between
    assert fast.attrs["full_detections"] == 2
    assert used["roi"] <= 4 and used["onet"] >= n - 4
    ious = np.array([iou(a[:4], b[None, :4])[0] for a, b in zip(naive.data, fast.data)])
    assert ious.min() >= 0.8 and np.median(ious) >= 0.9
    lm_f, lm_n = fast.data[:, 4:14].reshape(n, 5, 2), naive.data[:, 4:14].reshape(n, 5, 2)
    side = naive.data[:, 2] - naive.data[:, 0]
    assert (np.linalg.norm(lm_f - lm_n, axis=2).mean(1) / side).mean() < 0.02
    assert (fast.data[:, 14] >= 0.9).all()  # every tracked row passed the O-net probability bar


def test_unsure_onet_falls_back_to_the_window_cascade(th_frames, monkeypatch):
    """O-net finding nothing (or too little) on the moved inputs hands the frame to the window
    cascade: with O-net always unsure the rows are exactly the window-cascade tracker's."""
    n = len(th_frames)
    ref = Faces(FacesConfig()).process(iter(th_frames), n)
    monkeypatch.setattr(MtcnnEngine, "onet_track", lambda self, frame, inputs: Cascade.of(None))
    got = Faces(FacesConfig(track_onet_inputs=3)).process(iter(th_frames), n)
    np.testing.assert_array_equal(got.data, ref.data)
    np.testing.assert_array_equal(got.extras["crops"], ref.extras["crops"])


def test_two_people_keep_their_tracks_and_sides(two_faces_tone):
    from avpipe.extractors.media import iter_frames as frames

    n = two_faces_tone.truth["n_frames"]
    ref = Faces(FacesConfig()).process(frames(two_faces_tone.path), n)
    got = Faces(FacesConfig(track_onet_inputs=3)).process(frames(two_faces_tone.path), n)
    assert got.attrs["sides"] == ref.attrs["sides"] and ref.attrs["sides"]
    assert [t["id"] for t in got.attrs["tracks"]] == [t["id"] for t in ref.attrs["tracks"]]
    np.testing.assert_array_equal(got.extras["track_mask"], ref.extras["track_mask"])
    for a, b in zip(got.extras["track_data"], ref.extras["track_data"]):
        m = (a[:, 16] == 0) & (b[:, 16] == 0) & (a[:, 14] > 0)
        ious = np.array([iou(x[:4], y[None, :4])[0] for x, y in zip(a[m], b[m])])
        assert ious.min() >= 0.75
