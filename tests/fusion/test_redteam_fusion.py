"""Red-team replays (issue 19) for the trainer: values that passed validation and failed later,
epochs whose metrics are NaN."""
from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.fusion.config import TrainConfig
from avpipe.pipeline.config import ConfigError


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
