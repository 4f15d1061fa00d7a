"""X_left / X_right labels read their own person's features (never the main face silently)."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.fusion.data import TrackRef, load_bank
from avpipe.fusion.labels import LabelTrack
from avpipe.fusion.persons import PersonTrackError, person_side, select_person
from avpipe.fusion.source import FeatureArrays, MemorySource


def test_person_side():
    assert person_side("video10_1_left") == "left"
    assert person_side("batch1/video10_1_right") == "right"
    assert person_side("video10_1") is None and person_side("_left") is None


def _entry(sides):
    n = 4
    data = np.zeros((n, 2), np.float32)  # main face
    extras = {"track_ids": np.array([5, 8]), "track_data": np.stack([np.full((n, 2), 1.0), np.full((n, 2), 2.0)]),
              "track_mask": np.ones((2, n), bool)}
    return data, np.ones(n, bool), {"sides": sides, "tracks": [{}, {}]}, extras.__getitem__


def test_select_person_reads_the_bound_track():
    data, mask, attrs, extra = _entry({"left": 8, "right": 5})
    d, _ = select_person(data, mask, attrs, extra, "left", stage="visual", video="v.mp4")
    assert np.all(d == 2.0)
    d, _ = select_person(data, mask, attrs, extra, "right", stage="visual", video="v.mp4")
    assert np.all(d == 1.0)
    # an entry that is not per person (audio) is shared by both
    d, _ = select_person(data, mask, {}, extra, "left", stage="logmel", video="v.mp4")
    assert d is data


def test_face_entry_from_before_person_tracks_is_an_error():
    data, mask, _, extra = _entry({})
    old = {"upstream_json": '{"faces": "ab12", "probe": "cd34"}'}
    with pytest.raises(PersonTrackError, match="no person tracks.*re-extract"):
        select_person(data, mask, {"backbone": "hog"}, extra, "left", stage="visual", video="v.mp4", provenance=old)
    audio = {"upstream_json": '{"audio": "ab12", "probe": "cd34"}'}
    d, _ = select_person(data, mask, {}, extra, "left", stage="logmel", video="v.mp4", provenance=audio)
    assert d is data


def test_missing_side_is_an_error_not_the_main_face():
    data, mask, attrs, extra = _entry({})
    with pytest.raises(PersonTrackError, match="no left person track"):
        select_person(data, mask, attrs, extra, "left", stage="visual", video="v.mp4")


def test_load_bank_binds_left_and_right_and_names_the_label():
    n = 6
    main = FeatureArrays(np.zeros((n, 3), np.float32), np.ones(n, bool))
    left = FeatureArrays(np.full((n, 3), 1.0, np.float32), np.ones(n, bool))
    right = FeatureArrays(np.full((n, 3), 2.0, np.float32), np.ones(n, bool))
    two = FeatureArrays(main.data, main.mask, persons={"left": left, "right": right})
    one = FeatureArrays(main.data, main.mask, persons={})
    src = MemorySource({("visual", "X.mp4"): two, ("visual", "Y.mp4"): one})
    lab = lambda name: LabelTrack(name, name.rsplit("_", 1)[0], np.zeros((n, 2), np.float32))  # noqa: E731
    refs = [TrackRef("X_left", "X.mp4", lab("X_left")), TrackRef("X_right", "X.mp4", lab("X_right"))]
    assert [r.person for r in refs] == ["left", "right"]
    bank = load_bank(src, {"visual": ("visual", "fp")}, refs)
    x = bank.x["visual"]
    assert float(x[bank.track_slice(0)].mean()) == 1.0 and float(x[bank.track_slice(1)].mean()) == 2.0
    with pytest.raises(PersonTrackError, match="label 'Y_left'.*no left person track"):
        load_bank(src, {"visual": ("visual", "fp")}, [TrackRef("Y_left", "Y.mp4", lab("Y_left"))])


def _two_people(n=200, lost=(137, 167), dim=8, seed=0):
    """Main face = person 5 until frame 136, nobody while she is lost (137-166), then person 8 —
    the two-person clip where the first person's face is lost for frames 137-166."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    main = np.where(np.arange(n)[:, None] < lost[0], a, b)
    mask = np.ones(n, bool)
    mask[lost[0]:lost[1]] = False
    main[~mask] = 0
    ta = np.ones(n, bool)
    ta[lost[0]:lost[1]] = False
    extras = {"track_ids": np.array([5, 8]), "track_data": np.stack([a, b]),
              "track_mask": np.stack([ta, np.ones(n, bool)])}
    attrs = {"sides": {"left": 5, "right": 8}, "tracks": [{"id": 5}, {"id": 8}]}
    return main.astype(np.float32), mask, attrs, extras


def test_main_face_that_changes_person_is_found():
    from avpipe.fusion.persons import main_face_people, person_changes

    data, mask, attrs, extras = _two_people()
    who = main_face_people(data, mask, attrs, extras.__getitem__)
    assert (who[:137] == 5).all() and (who[137:167] == -1).all() and (who[167:] == 8).all()
    assert person_changes(who) == [(136, 5, 167, 8)]
    steady = np.where(mask[:, None], extras["track_data"][0], 0).astype(np.float32)
    assert person_changes(main_face_people(steady, mask, attrs, extras.__getitem__)) == []


def test_unsided_label_on_a_video_whose_main_face_switches_warns(tmp_path):
    from avpipe.fusion.source import CacheSource
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.types import StageResult

    data, mask, attrs, extras = _two_people()
    fp = write_precomputed(tmp_path / "cache", "visual", None,
                           {"c" * 32: StageResult(data, mask, extras=extras, attrs=attrs)}, {"c" * 32: "X.mp4"},
                           {"x": "two-people"})
    src = CacheSource(tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"'X.mp4'.*changes person: track 5 until frame 136, then track 8 "
                                         r"from frame 167.*X_left/X_right"):
        src.load("visual", fp, "X.mp4")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        left = src.load("visual", fp, "X.mp4", person="left")  # a sided label reads one person: no warning
    assert np.allclose(left.data, extras["track_data"][0])
