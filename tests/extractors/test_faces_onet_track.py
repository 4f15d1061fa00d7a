"""O-net tracking (``track_onet_inputs`` > 0, the default since #24): O-net alone on the last
cascade's inputs, moved with the face, on tracked frames; the window cascade when O-net is unsure,
every few frames to re-anchor, and on every tracked frame with ``track_onet_inputs = 0``."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.extractors.faces import Faces, FacesConfig
from avpipe.extractors.media import iter_frames
from avpipe.extractors.mtcnn import Cascade, MtcnnEngine, soft_answer
from avpipe.extractors.tracking import iou


# the window cascade on every tracked frame (version 4's output), and O-net tracking without the
# refinements (re-anchoring, odds-weighted answer, smoothing), as each was before they existed
WINDOW = dict(track_onet_inputs=0)
PLAIN = dict(track_onet_refresh=None, track_onet_temperature=None, track_onet_smooth=None)


@pytest.fixture(scope="module")
def th_frames(talking_head):
    return [f for _, f in zip(range(40), iter_frames(talking_head.path))]


def test_column_doc_says_which_tracker_made_the_tracked_rows(th_frames):
    from avpipe.extractors.face_columns import COLUMN_DOC

    few = th_frames[:3]
    window = Faces(FacesConfig(**WINDOW)).process(iter(few), 3).attrs["columns_doc"]
    default = Faces(FacesConfig()).process(iter(few), 3).attrs["columns_doc"]
    assert window == COLUMN_DOC and "O-net" not in window.split("0 if tracked")[1]
    assert "O-net alone" in default and "smoothed" in default


def test_on_by_default_and_absent_from_the_key_when_off():
    """Off, the output is version 4's: the fingerprint's config must be version 4's too, whatever
    the (then ignored) O-net options say."""
    d = Faces().semantic_config()
    assert (d["track_onet_inputs"], d["track_onet_refresh"], d["track_onet_temperature"],
            d["track_onet_smooth"]) == (4, 4, 3.0, 2)
    off = Faces(FacesConfig(**WINDOW)).semantic_config()
    assert not [k for k in off if k.startswith("track_onet")]
    assert Faces(FacesConfig(**WINDOW, track_onet_refresh=7, track_onet_smooth=None)).semantic_config() == off
    on = Faces(FacesConfig(track_onet_inputs=3, **PLAIN)).semantic_config()
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
    fast = Faces(FacesConfig(track_onet_inputs=3, **PLAIN)).process(iter(th_frames), n)
    used = dict(calls)
    naive = Faces(FacesConfig(**WINDOW, key_interval=1, detect_max_side=None)).process(iter(th_frames), n)
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
    ref = Faces(FacesConfig(**WINDOW)).process(iter(th_frames), n)
    monkeypatch.setattr(MtcnnEngine, "onet_track", lambda self, frame, inputs: Cascade.of(None))
    got = Faces(FacesConfig(track_onet_inputs=3, **PLAIN)).process(iter(th_frames), n)
    np.testing.assert_array_equal(got.data, ref.data)
    np.testing.assert_array_equal(got.extras["crops"], ref.extras["crops"])


def test_two_people_keep_their_tracks_and_sides(two_faces_tone):
    from avpipe.extractors.media import iter_frames as frames

    n = two_faces_tone.truth["n_frames"]
    ref = Faces(FacesConfig(**WINDOW)).process(frames(two_faces_tone.path), n)
    got = Faces(FacesConfig(track_onet_inputs=3, **PLAIN)).process(frames(two_faces_tone.path), n)
    assert got.attrs["sides"] == ref.attrs["sides"] and ref.attrs["sides"]
    assert [t["id"] for t in got.attrs["tracks"]] == [t["id"] for t in ref.attrs["tracks"]]
    np.testing.assert_array_equal(got.extras["track_mask"], ref.extras["track_mask"])
    for a, b in zip(got.extras["track_data"], ref.extras["track_data"]):
        m = (a[:, 16] == 0) & (b[:, 16] == 0) & (a[:, 14] > 0)
        ious = np.array([iou(x[:4], y[None, :4])[0] for x, y in zip(a[m], b[m])])
        assert ious.min() >= 0.75


# -- re-anchoring and the odds-weighted answer (track_onet_refresh, track_onet_temperature) ----------

SOFT = dict(track_onet_inputs=5, track_onet_temperature=3.0, track_onet_refresh=3, track_onet_smooth=None)


def test_refresh_and_temperature_validated_and_keyed_only_when_set():
    base = Faces(FacesConfig(track_onet_inputs=3, **PLAIN)).semantic_config()
    assert not {"track_onet_refresh", "track_onet_temperature", "track_onet_smooth"} & set(base)  # earlier keys
    assert "track_onet_refresh" not in Faces(FacesConfig(**WINDOW)).semantic_config()
    soft = Faces(FacesConfig(**SOFT)).semantic_config()
    assert soft["track_onet_refresh"] == 3 and soft["track_onet_temperature"] == 3.0
    assert Faces(FacesConfig(**{**SOFT, "track_onet_refresh": 4})).semantic_config() != soft
    for bad in ({"track_onet_refresh": 1}, {"track_onet_temperature": 0.0}, {"track_onet_temperature": -1.0},
                {"track_onet_smooth": 0}):
        with pytest.raises(ValueError):
            FacesConfig(track_onet_inputs=3, **bad)


def _cascade(boxes: list[list[float]], probs: list[float]) -> Cascade:
    b = np.array([[*x, p] for x, p in zip(boxes, probs)], np.float64)
    pts = np.stack([np.tile(((x[0] + x[2]) / 2, (x[1] + x[3]) / 2), (5, 1)) for x in b])
    return Cascade(b, pts, b[:, :4].copy(), np.array([int(np.argmax(probs))]))


def test_soft_answer_weighs_the_candidates_on_the_face_by_their_odds():
    c = _cascade([[100, 100, 200, 200], [104, 96, 208, 204], [400, 400, 500, 500]], [0.999, 0.99, 0.9999])
    k = 0  # the face of candidate 0; candidate 2 is another face and must not count
    box, lm = soft_answer(c, k, 1e6)  # very large temperature: the plain mean of the two on the face
    np.testing.assert_allclose(box, [102, 98, 204, 202], atol=1e-3)
    np.testing.assert_allclose(lm, np.tile((153, 150), (5, 1)), atol=1e-3)
    box, _ = soft_answer(c, k, 1e-3)  # very small: the most probable one (the cascade's argmax)
    np.testing.assert_allclose(box, [100, 100, 200, 200], atol=1e-6)
    box, _ = soft_answer(c, k, 1.0)  # odds 999 : 99
    np.testing.assert_allclose(box[0], (100 * 999 + 104 * 99) / (999 + 99), rtol=1e-6)


def test_refresh_reanchors_with_the_window_cascade_every_few_tracked_frames(th_frames, monkeypatch):
    calls = {"roi": 0, "onet": 0}
    roi, onet = MtcnnEngine.roi_cascade, MtcnnEngine.onet_track

    def count(name, f):
        def wrapped(self, *a, **k):
            calls[name] += 1
            return f(self, *a, **k)
        return wrapped

    monkeypatch.setattr(MtcnnEngine, "roi_cascade", count("roi", roi))
    monkeypatch.setattr(MtcnnEngine, "onet_track", count("onet", onet))
    n = len(th_frames)
    got = Faces(FacesConfig(**SOFT)).process(iter(th_frames), n)
    assert got.mask.all() and got.attrs["full_detections"] == 2
    tracked = n - 2
    # the window cascade on every 3rd tracked frame (plus the anchor after each key frame), O-net alone on the rest
    assert tracked // 3 <= calls["roi"] <= tracked // 3 + 4
    assert calls["onet"] + calls["roi"] >= tracked and calls["onet"] >= tracked // 2


def test_soft_tracking_agrees_with_per_frame_mtcnn_at_least_as_well_as_plain_onet(talking_head):
    """The whole talking-head fixture (192 frames): plain O-net tracking agrees (IoU >= 0.9) with
    per-frame MTCNN on ~81 % of frames, re-anchoring every 3rd frame with the odds-weighted answer
    on ~96 %; the bound is set below that with room for float rounding across machines."""
    frames = list(iter_frames(talking_head.path))
    n = len(frames)
    naive = Faces(FacesConfig(**WINDOW, key_interval=1, detect_max_side=None)).process(iter(frames), n)
    plain = Faces(FacesConfig(track_onet_inputs=3, **PLAIN)).process(iter(frames), n)
    soft = Faces(FacesConfig(**SOFT)).process(iter(frames), n)

    def agree(r):
        return np.mean([iou(a[:4], b[None, :4])[0] >= 0.9 for a, b in zip(naive.data, r.data)])

    default = Faces(FacesConfig()).process(iter(frames), n)  # 4 inputs, T = 3, every 4th, smoothed over ±2
    assert soft.mask.all() and default.mask.all()
    assert agree(soft) >= 0.93 and agree(soft) > agree(plain) + 0.08
    assert agree(default) >= 0.96 and agree(default) >= agree(soft)  # ~98 %, ~96 %
    lm_s, lm_n = soft.data[:, 4:14].reshape(n, 5, 2), naive.data[:, 4:14].reshape(n, 5, 2)
    side = naive.data[:, 2] - naive.data[:, 0]
    assert (np.linalg.norm(lm_s - lm_n, axis=2).mean(1) / side).mean() < 0.01


def test_soft_tracking_falls_back_when_the_face_is_lost(th_frames):
    """Black frames in the middle (the face gone): the tracked face is lost, those rows are
    masked (found by the full cascade, not made up by O-net), and the face is found again by a
    full cascade on the first frame it is back."""
    black = [np.zeros_like(th_frames[0]) for _ in range(4)]
    frames = th_frames[:12] + black + th_frames[12:24]
    n = len(frames)
    got = Faces(FacesConfig(**SOFT)).process(iter(frames), n)
    assert got.mask[:12].all() and not got.mask[12:16].any() and got.mask[16:].all()
    assert got.data[12, 16] == 1 and got.data[16, 16] == 1  # full cascade where it was lost and where it is back
    assert (got.data[12:16, :15] == 0).all()


def test_soft_tracking_with_onet_always_unsure_is_the_window_tracker(th_frames, monkeypatch):
    n = len(th_frames)
    ref = Faces(FacesConfig(**WINDOW)).process(iter(th_frames), n)
    monkeypatch.setattr(MtcnnEngine, "onet_track", lambda self, frame, inputs: Cascade.of(None))
    got = Faces(FacesConfig(**SOFT)).process(iter(th_frames), n)
    np.testing.assert_array_equal(got.data, ref.data)
    np.testing.assert_array_equal(got.extras["crops"], ref.extras["crops"])


@pytest.mark.parametrize("cfg", [SOFT, {}], ids=["soft", "defaults"])
def test_two_people_keep_their_tracks_and_sides_with_refined_tracking(two_faces_tone, cfg):
    """Odds-weighted, re-anchored O-net tracking (and the defaults: smoothed too) keep both people
    apart: the same tracks, sides and coverage as the window cascade, boxes on the same faces."""
    n = two_faces_tone.truth["n_frames"]
    ref = Faces(FacesConfig(**WINDOW)).process(iter_frames(two_faces_tone.path), n)
    got = Faces(FacesConfig(**cfg)).process(iter_frames(two_faces_tone.path), n)
    assert got.attrs["sides"] == ref.attrs["sides"] and ref.attrs["sides"]
    assert [t["id"] for t in got.attrs["tracks"]] == [t["id"] for t in ref.attrs["tracks"]]
    np.testing.assert_array_equal(got.extras["track_mask"], ref.extras["track_mask"])
    for a, b in zip(got.extras["track_data"], ref.extras["track_data"]):
        m = a[:, 14] > 0
        ious = np.array([iou(x[:4], y[None, :4])[0] for x, y in zip(a[m], b[m])])
        assert ious.min() >= 0.8


SMOOTH = dict(track_onet_inputs=4, track_onet_temperature=3.0, track_onet_refresh=4, track_onet_smooth=None)


def _onet_frames(monkeypatch) -> set[int]:
    """Record the frames whose main face O-net alone answered (set filled while processing)."""
    import avpipe.extractors.face_tracker as ft

    seen: set[int] = set()
    follow, onet = ft.FaceTracker.follow, ft.FaceTracker._onet
    now = {"i": -1}

    def follow_(self, i, frame):
        now["i"] = i
        return follow(self, i, frame)

    def onet_(self, frame, tid):
        got = onet(self, frame, tid)
        if got is not None and tid == self.main:
            seen.add(now["i"])
        return got

    monkeypatch.setattr(ft.FaceTracker, "follow", follow_)
    monkeypatch.setattr(ft.FaceTracker, "_onet", onet_)
    return seen


def test_smoothing_averages_only_onet_frames_over_their_neighbours(th_frames, monkeypatch):
    """The smoothed run makes the same tracking decisions as the unsmoothed one (smoothing touches
    stored answers only): cascade frames are unchanged; each O-net frame's box and landmarks are
    the mean of the unsmoothed answers within 2 frames on each side (as many on each side, inside
    the run), and its crop is aligned from those landmarks."""
    from avpipe.extractors.alignment import align_face

    n = len(th_frames)
    seen = _onet_frames(monkeypatch)
    raw = Faces(FacesConfig(**SMOOTH)).process(iter(th_frames), n)
    onet = sorted(seen)
    seen.clear()
    got = Faces(FacesConfig(**{**SMOOTH, "track_onet_smooth": 2})).process(iter(th_frames), n)
    assert sorted(seen) == onet and len(onet) >= n // 2
    assert raw.mask.all() and got.mask.all()
    other = [i for i in range(n) if i not in seen]
    np.testing.assert_array_equal(got.data[other], raw.data[other])
    np.testing.assert_array_equal(got.extras["crops"][other], raw.extras["crops"][other])
    for i in onet:
        k = min(2, i, n - 1 - i)
        want = raw.data[i - k:i + k + 1, :14].astype(np.float64).mean(0)
        np.testing.assert_allclose(got.data[i, :14], want, rtol=0, atol=1e-3)
        np.testing.assert_array_equal(got.data[i, 14:], raw.data[i, 14:])  # probability, count, flag
        lm = got.data[i, 4:14].astype(np.float64).reshape(5, 2)  # stored float32; the crop used float64
        diff = np.abs(got.extras["crops"][i].astype(int) - align_face(th_frames[i], lm, 112, "arcface"))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert np.abs(got.data[onet, :4] - raw.data[onet, :4]).max() > 0.05  # it did smooth


def test_smoothing_stops_at_the_end_of_a_run(th_frames, monkeypatch):
    """Frames of the face on the two sides of a gap (the face gone for 4 frames) are never mixed."""
    black = [np.zeros_like(th_frames[0]) for _ in range(4)]
    frames = th_frames[:14] + black + th_frames[14:30]
    n = len(frames)
    seen = _onet_frames(monkeypatch)
    raw = Faces(FacesConfig(**SMOOTH)).process(iter(frames), n)
    got = Faces(FacesConfig(**{**SMOOTH, "track_onet_smooth": 2})).process(iter(frames), n)
    assert not got.mask[14:18].any() and got.mask[:14].all() and got.mask[18:].all()
    for i in sorted(seen):
        a, b = (0, 14) if i < 14 else (18, n)
        k = min(2, i - a, b - 1 - i)
        want = raw.data[i - k:i + k + 1, :14].astype(np.float64).mean(0)
        np.testing.assert_allclose(got.data[i, :14], want, rtol=0, atol=1e-3)


def test_smoothed_rows_are_the_same_streamed_in_small_chunks(th_frames, monkeypatch):
    """Rows are handed on only once final: chunk boundaries falling on O-net frames that still
    wait for their neighbours change nothing."""
    from avpipe.pipeline import chunks

    n = len(th_frames)
    cfg = FacesConfig()  # the defaults: SMOOTH with track_onet_smooth 2
    whole = Faces(cfg).process(iter(th_frames), n)
    monkeypatch.setattr(chunks, "CHUNK_FRAMES", 5)
    small = Faces(cfg).process(iter(th_frames), n)
    np.testing.assert_array_equal(small.data, whole.data)
    np.testing.assert_array_equal(small.extras["crops"], whole.extras["crops"])


def test_key_frame_anchors_onet_tracking_on_the_next_frame(th_frames, monkeypatch):
    """With ``track_onet_key_anchor`` (the default) the key frame's own cascade hands O-net its
    inputs: the frame after a key frame is O-net's, one window cascade fewer per key interval,
    and the rows stay close to per-frame MTCNN's. Off, it is the first O-net default (the next
    frame runs the window cascade), and absent from the key."""
    assert Faces().semantic_config()["track_onet_key_anchor"] is True
    off = Faces(FacesConfig(track_onet_key_anchor=False)).semantic_config()
    assert "track_onet_key_anchor" not in off
    assert off == {k: v for k, v in Faces().semantic_config().items() if k != "track_onet_key_anchor"}
    assert "track_onet_key_anchor" not in Faces(FacesConfig(**WINDOW)).semantic_config()

    frames = th_frames[:35]  # key frames 0 and 30
    n = len(frames)
    calls = {"roi": 0}
    roi = MtcnnEngine.roi_cascade

    def count_roi(self, *a, **k):
        calls["roi"] += 1
        return roi(self, *a, **k)

    monkeypatch.setattr(MtcnnEngine, "roi_cascade", count_roi)
    seen = _onet_frames(monkeypatch)
    on = Faces(FacesConfig()).process(iter(frames), n)
    onet_on, roi_on = set(seen), calls["roi"]
    seen.clear()
    calls["roi"] = 0
    plain = Faces(FacesConfig(track_onet_key_anchor=False)).process(iter(frames), n)
    onet_off, roi_off = set(seen), calls["roi"]
    assert on.mask.all() and plain.mask.all() and on.attrs["full_detections"] == 2
    assert {1, 31} <= onet_on and not {1, 31} & onet_off
    assert roi_on < roi_off
    naive = Faces(FacesConfig(**WINDOW, key_interval=1, detect_max_side=None)).process(iter(frames), n)
    ious = np.array([iou(a[:4], b[None, :4])[0] for a, b in zip(naive.data, on.data)])
    assert ious.min() >= 0.8 and (ious >= 0.9).mean() >= 0.9
