"""Red-team replays (issue 19) for the trainer: values that passed validation and failed later,
epochs whose metrics are NaN."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.fusion.config import TrainConfig
from avpipe.pipeline.config_schema import ConfigError


@pytest.mark.parametrize("key,value,words", [
    ("lr", math.inf, "finite"), ("weight_decay", math.inf, "finite"), ("lr", math.nan, "finite"),
    ("seed", 2**64, "between"), ("seed", 2**40, "<= 4294967295"), ("window", 100_000_000, "<= 1000000"),
    ("hop", 10**12, "<= 1000000"), ("step_gamma", math.inf, "finite"), ("lr", 1e6, "<= 10"),
])
def test_absurd_and_non_finite_train_values_are_refused_where_parsed(key, value, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**{key: value})


def test_train_cli_refuses_them_with_exit_2_before_any_work(tmp_path):
    from avpipe.cli import main

    labels = tmp_path / "labels.csv"
    labels.write_text("video,frame,valence,arousal\na.mp4,0,0.1,0.2\n")
    for flags in (["--lr", "inf"], ["--seed", str(2**64)], ["--window", "100000000"]):
        r = CliRunner().invoke(main, ["train", "--fusion", "jca", "--labels", str(labels),
                                      "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                                      *flags])
        assert r.exit_code == 2, (flags, r.output)
        assert "Traceback" not in r.output and flags[0] in r.output
        assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def _ev(preds, labels, valid):
    from avpipe.fusion.metrics import evaluate

    return evaluate(preds, labels, valid, None)


def test_nan_epoch_fails_naming_no_labelled_validation_frame():
    from avpipe.fusion.guards import TrainingFailed, check_epoch

    rng = np.random.default_rng(0)
    p, y = rng.normal(size=(50, 2)), np.full((50, 2), -5.0)
    ev = _ev({"v": p}, {"v": y}, {"v": np.zeros(50, bool)})  # every label is -5: masked
    assert math.isnan(ev.overall["mean"])
    with pytest.raises(TrainingFailed, match="no labelled frame"):
        check_epoch(0, 1.0, 3, ev, {"v": p})


def test_nan_epoch_fails_naming_divergence():
    from avpipe.fusion.guards import TrainingFailed, check_epoch

    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, size=(50, 2))
    p = np.full((50, 2), np.nan)
    ev = _ev({"v": p}, {"v": y}, {"v": np.ones(50, bool)})
    with pytest.raises(TrainingFailed, match="predicts NaN"):
        check_epoch(2, 4.0, 3, ev, {"v": p})
    with pytest.raises(TrainingFailed, match="loss is nan"):
        check_epoch(2, math.nan, 3, ev, {"v": p})
    good = rng.uniform(-1, 1, size=(50, 2))
    check_epoch(2, 4.0, 3, _ev({"v": good}, {"v": y}, {"v": np.ones(50, bool)}), {"v": good})  # fine


# -- crafted and damaged shards --------------------------------------------------------------------
def _feature_cache(tmp_path, rows=(40, 50, 60), nan_rows=()):
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.types import StageResult

    rng = np.random.default_rng(0)
    results, keys = {}, {}
    for i, n in enumerate(rows):
        cid = f"{i:040x}"
        data = rng.normal(size=(n, 8)).astype(np.float32)
        if i == 0:
            data[list(nan_rows)] = np.nan
        results[cid], keys[cid] = StageResult(data=data), f"v{i}.mp4"
    fp = write_precomputed(tmp_path / "cache", "feat", None, results, keys, {"dim": 8}, shard_size=1)
    return tmp_path / "cache", fp


def _shard_of(cache, fp, key):
    from avpipe.pipeline.store import Cache

    with Cache(cache) as c:
        return c.root / c.index.entry(fp, c.resolve_video(key))[0], c.resolve_video(key)


def test_nan_feature_rows_are_masked_with_a_count(tmp_path):
    from avpipe.fusion.source import CacheSource

    cache, fp = _feature_cache(tmp_path, nan_rows=(3, 7, 8))
    with pytest.warns(UserWarning, match="3 of 40 row"):
        a = CacheSource(cache).load("feat", fp, "v0.mp4")
    assert np.isfinite(a.data).all()
    assert not a.mask[[3, 7, 8]].any() and a.mask.sum() == 37


def test_shard_declaring_a_huge_row_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import h5py

    import avpipe.fusion.feature_checks as fc
    from avpipe.fusion.source import CacheSource, FeatureError

    cache, fp = _feature_cache(tmp_path)
    shard, cid = _shard_of(cache, fp, "v1.mp4")
    with h5py.File(shard, "r+") as h5:  # same row count as the index, 4e6 columns (never written)
        del h5[cid]["data"]
        h5[cid].create_dataset("data", shape=(50, 4_000_000), dtype="f4", chunks=(1, 1 << 16))
    src = CacheSource(cache)
    src.load("feat", fp, "v0.mp4")
    with pytest.raises(FeatureError, match=r"rows of shape \(4000000,\), other videos of this feature \(8,\)"):
        src.load("feat", fp, "v1.mp4")
    monkeypatch.setattr(fc, "memory_limit_bytes", lambda: 1 << 20)
    with pytest.raises(FeatureError, match="more than half the memory"):
        CacheSource(cache).load("feat", fp, "v1.mp4")  # even as the first video read


def test_shard_whose_row_count_differs_from_the_index_is_refused(tmp_path):
    import h5py

    from avpipe.fusion.source import CacheSource, FeatureError

    cache, fp = _feature_cache(tmp_path)
    shard, cid = _shard_of(cache, fp, "v2.mp4")
    with h5py.File(shard, "r+") as h5:
        del h5[cid]["data"]
        h5[cid]["data"] = np.zeros((95, 8), np.float32)
    with pytest.raises(FeatureError, match="declare 95 rows but the index recorded 60"):
        CacheSource(cache).load("feat", fp, "v2.mp4")


def test_truncated_shard_is_one_error_naming_video_and_stage(tmp_path):
    from avpipe.fusion.source import CacheSource, FeatureError

    cache, fp = _feature_cache(tmp_path)
    shard, _ = _shard_of(cache, fp, "v1.mp4")
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(FeatureError, match=r"feat features of video 'v1.mp4'.*damaged or truncated.*cache verify"):
        CacheSource(cache).load("feat", fp, "v1.mp4")


# -- labels bounded before they are read into memory -------------------------------------------------
def _csv(tmp_path, rows):
    p = tmp_path / "labels.csv"
    p.write_text("video,frame,valence,arousal\n" + "".join(r + "\n" for r in rows))
    return p


@pytest.mark.parametrize("row,words", [
    ("a.mp4,2000000000,0.1,0.1", "frame 2000000000 is outside any video"),
    ("a.mp4,400000000,0.1,0.1", "frame 400000000 is outside any video"),
    ("a.mp4,-1,0.1,0.1", "frame -1 is outside any video"),
    ("a.mp4,1,0_1,0.2", "'0_1' is not a plain number"),
    ("a.mp4,1_0,0.1,0.2", "not a plain integer"),
])
def test_label_rows_that_would_exhaust_memory_or_mislead_are_refused(tmp_path, row, words):
    from avpipe.fusion.labels import LabelError, load_csv

    with pytest.raises(LabelError, match=words):
        load_csv(_csv(tmp_path, ["a.mp4,0,0.5,0.5", row]))


def test_duplicated_csv_frame_names_both_lines(tmp_path):
    from avpipe.fusion.labels import LabelError, load_csv

    with pytest.raises(LabelError, match=r"frame 1 of video 'a.mp4' is listed twice \(lines 3 and 5\)"):
        load_csv(_csv(tmp_path, ["a.mp4,0,0.5,0.5", "a.mp4,1,0.1,0.1", "b.mp4,1,0.1,0.1", "a.mp4,1,0.9,0.9"]))


def test_oversized_label_file_is_refused_before_reading(tmp_path, monkeypatch):
    import avpipe.fusion.labels as lab

    p = _csv(tmp_path, [f"a.mp4,{i},0.1,0.1" for i in range(2000)])
    monkeypatch.setattr(lab, "MAX_LABEL_BYTES", 4096)
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read")))
    with pytest.raises(lab.LabelError, match="more than a label file can be"):
        lab.load_csv(p)


def test_nan_labels_are_not_reported_as_clipped(tmp_path):
    from avpipe.fusion.labels import load_csv

    with pytest.warns(UserWarning) as rec:
        (t,) = load_csv(_csv(tmp_path, ["a.mp4,0,0.5,0.5", "a.mp4,1,nan,0.1"]))
    words = " ".join(str(w.message) for w in rec)
    assert "treated as unlabelled" in words and "clipped" not in words
    assert not t.valid[1] and t.valid[0]


def test_training_with_every_validation_label_minus_5_fails_naming_why(corpus, tmp_path):
    """It used to finish with "val CCC nan" and exit 0."""
    import shutil

    from avpipe.fusion.guards import TrainingFailed
    from avpipe.fusion.train import train
    from tests.fusion.conftest import small_config

    labels = tmp_path / "labels"
    shutil.copytree(corpus["labels"], labels)
    for p in (labels / "Validation_Set").glob("*.txt"):
        n = len(p.read_text().splitlines()) - 1
        p.write_text("valence,arousal\n" + "-5,-5\n" * n)
    cfg = small_config(corpus, "jca", tmp_path / "run", labels=str(labels), epochs=1, model={"hidden": 16})
    with pytest.raises(TrainingFailed) as ei:
        train(cfg, log=lambda m: None)
    assert ei.type is TrainingFailed and "validation split has no labelled frame" in str(ei.value), ei.value
