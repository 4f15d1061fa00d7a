"""End to end on an Aff-Wild2-shaped corpus: extract, train, evaluate, predict, submission file.

Real media with two different people (tests/affwild2_fixture.py): each person's labels are drawn on
their own face only, the right person is the larger (main) face. So a ``_left`` label fed the main
face would be trained and scored on the right person — these tests fail on a pipeline that does
that (as avpipe did before person tracks: both labels read the main-face features).
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import TrackRef, load_bank
from avpipe.fusion.labels import LabelTrack, read_affwild2_file
from avpipe.fusion.metrics import ccc
from avpipe.fusion.persons import PersonTrackError
from avpipe.fusion.source import CacheSource
from avpipe.fusion.submission import run_predictor
from avpipe.fusion.train import train
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.store import Cache
from tests.affwild2_fixture import N_FRAMES, make_affwild2_tree

OFFLINE = PipelineConfig({"visual": {"backbone": "hog"}})  # faces (MTCNN) + HOG visual + logmel


def _train(tree, cache, out, features):
    cfg = TrainConfig(fusion="concat", labels=str(tree.labels), cache=str(cache), out=str(out), features=features,
                      epochs=12, window=20, hop=5, batch_size=8, device="cpu", seed=0, plot_videos=0)
    return train(cfg, log=lambda m: None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("affwild2")
    tree = make_affwild2_tree(root)
    cache = root / "cache"
    summary = run_extract(cache, tree.videos, OFFLINE, stages=["visual", "logmel"], progress=False)
    assert summary.ok, summary.render()
    run = root / "runs" / "concat"
    _train(tree, cache, run, {"visual": "visual", "audio": "logmel"})
    return tree, cache, run


def _labels(tree, name, split="Validation_Set"):
    return read_affwild2_file(tree.labels / split / f"{name}.txt")


def test_tree_is_affwild2_shaped(corpus):
    tree, _, _ = corpus
    assert (tree.videos / "batch1" / "1-30-1280x720.mp4").is_file()
    assert (tree.videos / "batch1" / "video10_1.mp4").is_file()
    left, right = _labels(tree, "video20_left"), _labels(tree, "video20_right")
    assert len(left) == N_FRAMES and (left == -5).all(1).sum() == 3 and (right == -5).all(1).sum() == 5
    assert not np.allclose(left[5:], right[5:])
    assert sorted(p.name for p in tree.crops.iterdir())[:3] == ["1-30-1280x720", "video10_1_left", "video10_1_right"]


def test_two_person_video_has_a_track_per_person(corpus):
    _, cache, _ = corpus
    with Cache(cache) as c:
        f = c.read("faces", "batch2/video20.mp4", config=OFFLINE)
        sides = f.attrs["sides"]
        tracks = {t["id"]: t for t in f.attrs["tracks"]}
        assert set(sides) == {"left", "right"} and len(tracks) == 2
        assert tracks[sides["left"]]["median_cx"] < 128 < tracks[sides["right"]]["median_cx"]
        assert all(t["frames"] >= 0.95 * N_FRAMES for t in tracks.values())
        # the main-face view (the default ``data``) is unchanged: the larger, right person
        cx = (f.data[f.mask, 0] + f.data[f.mask, 2]) / 2
        assert np.all(cx > 128)
    r = CliRunner().invoke(main, ["inspect", "batch2/video20.mp4", "--cache", str(cache)])
    assert r.exit_code == 0 and "binds *_left labels" in r.output and "binds *_right labels" in r.output


def test_left_and_right_features_come_from_different_people(corpus):
    _, cache, _ = corpus
    with Cache(cache) as c:
        def person(video, side):
            e = c.read("visual", video, config=OFFLINE)
            r = list(e.extra("track_ids")).index(e.attrs["sides"][side])
            return e.extra("track_data")[r], e.extra("track_mask")[r]

        l20, ml = person("batch2/video20.mp4", "left")
        r20, mr = person("batch2/video20.mp4", "right")
        l10, _ = person("batch1/video10_1.mp4", "left")
        r10, _ = person("batch1/video10_1.mp4", "right")
    assert ml.mean() > 0.95 and mr.mean() > 0.95
    # each track is one person: closer to the same person in another video than to the other one
    d = lambda a, b: float(np.linalg.norm(a.mean(0) - b.mean(0)))  # noqa: E731
    assert d(l20, l10) < 0.5 * d(l20, r10) and d(r20, r10) < 0.5 * d(r20, l10)
    assert d(l20, r20) > 2 * max(d(l20, l10), d(r20, r10))


def test_model_follows_the_left_persons_face_not_the_right(corpus):
    tree, cache, run = corpus
    src = CacheSource(cache)
    with Cache(cache) as c:
        e = c.read("visual", "batch2/video20.mp4", config=OFFLINE)
        fp = e.fingerprint
        left_rows = e.extra("track_data")[list(e.extra("track_ids")).index(e.attrs["sides"]["left"])]
    lab = LabelTrack("video20_left", "video20", _labels(tree, "video20_left"))
    bank = load_bank(src, {"visual": ("visual", fp)}, [TrackRef("video20_left", "batch2/video20.mp4", lab)])
    np.testing.assert_array_equal(bank.x["visual"][:N_FRAMES].numpy(), left_rows)  # not the main face

    predict = run_predictor(run, ["batch2/video20.mp4"], cache=str(cache), device="cpu")
    left = _labels(tree, "video20_left")
    ok = (left != -5).all(1)
    own = [ccc(predict("video20_left")[ok, k], left[ok, k]) for k in range(2)]
    main_face = [ccc(predict("video20")[ok, k], left[ok, k]) for k in range(2)]  # the right person's face
    assert own[0] > 0.4 and own[1] > 0.4, own
    assert np.mean(main_face) < np.mean(own) - 0.3, (own, main_face)


def test_label_for_a_side_the_video_lacks_is_an_error(corpus):
    tree, cache, _ = corpus
    src = CacheSource(cache)
    with Cache(cache) as c:
        fp = c.read("visual", "batch1/1-30-1280x720.mp4", config=OFFLINE).fingerprint
    lab = LabelTrack("1-30-1280x720_left", "1-30-1280x720", np.zeros((N_FRAMES, 2), np.float32))
    with pytest.raises(PersonTrackError, match=r"label '1-30-1280x720_left'.*no left person track"):
        load_bank(src, {"visual": ("visual", fp)}, [TrackRef(lab.name, "batch1/1-30-1280x720.mp4", lab)])


def test_evaluate_and_predict_with_submission(corpus, tmp_path):
    tree, cache, run = corpus
    r = CliRunner().invoke(main, ["evaluate", str(run), "--per-video"])
    assert r.exit_code == 0 and "video20_left" in r.output and "video20_right" in r.output
    out = tmp_path / "preds"
    r = CliRunner().invoke(main, ["predict", "--run", str(run), "--videos", str(tree.videos), "--out", str(out),
                                  "--format", "affwild2", "--device", "cpu", "--submission", str(tree.sample)])
    assert r.exit_code == 0, r.output
    # a two-person video: one file per person, each from that person's face (raw values)
    assert not (out / "batch2" / "video30_2.txt").exists()
    per_person = {p: np.loadtxt(out / "batch2" / f"video30_2_{p}.txt", delimiter=",", skiprows=1)
                  for p in ("left", "right")}
    lines = (out / "submission.txt").read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal" and len(lines) == 1 + 2 * N_FRAMES
    listed = [row.split(",")[0] for row in tree.sample.read_text().splitlines()[1:]]
    assert [ln.split(",")[0] for ln in lines[1:]] == listed  # the sample's rows, in its order
    predict = run_predictor(run, ["batch2/video30_2.mp4"], cache=str(cache), device="cpu")
    want = np.clip(predict("video30_2_right"), -1, 1)
    got = np.array([[float(x) for x in ln.split(",")[1:]] for ln in lines[1 + N_FRAMES:]])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.clip(per_person["right"], -1, 1), want, atol=2e-6)
    left = np.array([[float(x) for x in ln.split(",")[1:]] for ln in lines[1:1 + N_FRAMES]])
    assert np.abs(left - got).mean() > 0.05  # the two people's rows differ

    bad = tmp_path / "sample.txt"
    bad.write_text("image_location,valence,arousal\nvideo30_2_left/00001.jpg,\nvideo99/00001.jpg,\n"
                   f"video30_2_right/{N_FRAMES + 1:05d}.jpg,\n")
    r = CliRunner().invoke(main, ["predict", "--run", str(run), "--videos", str(tree.videos), "--out",
                                  str(tmp_path / "p2"), "--device", "cpu", "--no-extract", "--submission", str(bad)])
    assert r.exit_code == 1
    assert "video99/00001.jpg" in r.output and f"video30_2_right/{N_FRAMES + 1:05d}.jpg" in r.output
    assert not (tmp_path / "p2" / "submission.txt").exists()


def test_organisers_crops_as_the_faces_source(corpus, tmp_path):
    tree, cache, _ = corpus
    r = CliRunner().invoke(main, ["ingest-crops", "--crops", str(tree.crops), "--videos", str(tree.videos),
                                  "--cache", str(cache), "--backbone", "hog"])
    assert r.exit_code == 0, r.output
    vfp = [ln.split()[-1] for ln in r.output.splitlines() if ln.startswith("visual fingerprint")][0]
    run = tmp_path / "crops_run"
    s = _train(tree, cache, run, {"visual": f"visual@{vfp}", "audio": "logmel"})
    assert s["best"]["val_ccc_mean"] > 0.3, s["best"]
    out = tmp_path / "preds"
    r = CliRunner().invoke(main, ["predict", "--run", str(run), "--videos", str(tree.videos), "--out", str(out),
                                  "--device", "cpu", "--no-extract", "--submission", str(tree.sample)])
    assert r.exit_code == 0, r.output
    assert len((out / "submission.txt").read_text().splitlines()) == 1 + 2 * N_FRAMES
