"""Predictions a user can use: the run carries its stage configs (predict on another cache extracts
exactly the trained-on inputs, or refuses), one output per person on two-person videos."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.predict import PredictSetupError, _pipeline_config, predict_videos
from avpipe.fusion.predictor import persons_of
from avpipe.fusion.source import CacheSource, StageRef
from avpipe.fusion.prepare import feature_configs
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.config import PipelineConfig
from tests.media import make_clip


@pytest.fixture()
def toy(tmp_path):
    from tests.pipeline import toy_stages as ts

    ts.register()
    v = tmp_path / "videos"
    make_clip(v / "a.mp4", seed=1)
    yield v
    ts.unregister()


def test_a_run_reproduces_its_inputs_on_another_cache(toy, tmp_path):
    """Trained on toy_b with non-default configs upstream and itself: a fresh cache gets the very
    same fingerprint (the old code planned the stage's *default* configs there)."""
    a = tmp_path / "A"
    cfg_used = PipelineConfig({"toy_a": {"scale": 3.0}, "toy_b": {"offset": 2.0}})
    assert run_extract(a, toy, cfg_used, stages=["toy_b"], progress=False).exit_code == 0
    src = CacheSource(a, cfg_used)
    fp = src.resolve(StageRef("toy_b"), ["a.mp4"])
    fps = {"x": ("toy_b", fp)}
    run_cfg = TrainConfig(feature_configs=feature_configs(src, fps))
    assert set(run_cfg.feature_configs) == {"toy_b", "toy_a", "probe"}
    assert run_cfg.feature_configs["toy_a"]["config"] == {"scale": 3.0}
    config, names = _pipeline_config(run_cfg, str(tmp_path / "B"), fps)
    assert names == ["toy_b"]
    b = tmp_path / "B"
    assert run_extract(b, toy, config, stages=names, progress=False).exit_code == 0
    assert CacheSource(b).has("toy_b", fp, "a.mp4")  # the exact fingerprint the run was trained on
    # a run recording no configs, on a cache without its fingerprints: refused, naming --cache
    with pytest.raises(PredictSetupError, match="records no stage configs.*--cache"):
        _pipeline_config(TrainConfig(), str(tmp_path / "C"), fps)
    # a changed stage version: refused rather than extract other inputs
    bumped = json.loads(json.dumps(run_cfg.feature_configs))
    bumped["toy_b"]["version"] = "0"
    with pytest.raises(PredictSetupError, match="version 0, this avpipe has version 1"):
        _pipeline_config(TrainConfig(feature_configs=bumped), str(b), fps)


def test_the_trainer_records_feature_configs(corpus, tmp_path):
    from avpipe.fusion.train import train
    from tests.fusion.conftest import small_config

    out = tmp_path / "run"
    train(small_config(corpus, "audio", out, epochs=1, features={"audio": "logmel"}), log=lambda m: None)
    saved = json.loads((out / "config.json").read_text())
    fp = saved["resolved_features"]["audio"]["fingerprint"]
    assert saved["feature_configs"]["logmel"]["fingerprint"] == fp
    assert saved["feature_configs"]["logmel"]["version"] == "precomputed"


def test_two_person_video_gets_one_output_per_person(corpus, tmp_path):
    """A run trained on the corpus, a video whose visual entry binds left and right: two files,
    each from its person's face, with presence columns and one summary line each."""
    from avpipe.fusion.train import train
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.types import StageResult
    from tests.fusion.conftest import SMALL_DIMS, small_config

    run = tmp_path / "run"
    train(small_config(corpus, "jca", run, epochs=1), log=lambda m: None)
    rf = json.loads((run / "config.json").read_text())["resolved_features"]
    cache = tmp_path / "two"
    n, cid, key = 40, "cd" * 20, "clips/two.mp4"
    rng = np.random.default_rng(0)
    left, right = (rng.normal(size=(n, SMALL_DIMS["visual"])).astype(np.float32) for _ in range(2))
    lmask = np.ones(n, bool)
    lmask[:10] = False  # the left person is off screen at first
    vis = StageResult(np.zeros((n, SMALL_DIMS["visual"]), np.float32), np.ones(n, bool),
                      attrs={"sides": {"left": 3, "right": 4}, "tracks": [{}, {}]},
                      extras={"track_ids": np.array([3, 4]), "track_data": np.stack([left, right]),
                              "track_mask": np.stack([lmask, np.ones(n, bool)])})
    write_precomputed(cache, "visual", rf["visual"]["fingerprint"], {cid: vis}, {cid: key}, {"synthetic": True})
    for m, d in rf.items():
        if m != "visual":
            res = StageResult(rng.normal(size=(n, SMALL_DIMS[m])).astype(np.float32), np.ones(n, bool))
            write_precomputed(cache, d["stage"], d["fingerprint"], {cid: res}, {cid: key}, {"synthetic": True})
    src = CacheSource(cache)
    assert persons_of(src, {m: (d["stage"], d["fingerprint"]) for m, d in rf.items()}, key) == ["left", "right"]
    files = predict_videos(run, tmp_path, tmp_path / "out", source=src, keys=[key], extract=False, device="cpu",
                           log=lambda m: None)
    assert [f.relative_to(tmp_path / "out").as_posix() for f in files] == ["clips/two_left.csv", "clips/two_right.csv"]
    lrows = list(csv.DictReader(files[0].open()))
    rrows = list(csv.DictReader(files[1].open()))
    assert len(lrows) == len(rrows) == n
    assert [r["visual_present"] for r in lrows[:12]] == ["0"] * 10 + ["1"] * 2
    assert all(r["visual_present"] == "1" for r in rrows)
    assert [r["valence"] for r in lrows] != [r["valence"] for r in rrows]  # each from its own face
    summ = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [(r["person"], r["file"]) for r in summ] == [("left", "clips/two_left.csv"), ("right", "clips/two_right.csv")]
    assert float(summ[0]["visual_coverage"]) == pytest.approx(0.75)
