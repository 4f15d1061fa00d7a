"""TensorBoard event files in a run: scalars per epoch (CCC, loss, lr) and the prediction figure."""
from __future__ import annotations

import csv

import pytest

from tests.fusion.conftest import small_config

pytest.importorskip("tensorboard")


def test_run_writes_tensorboard_events_next_to_the_csv(corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from avpipe.fusion.train import train

    out = tmp_path / "run"
    train(small_config(corpus, "concat", out, epochs=3, model={"hidden": 16}), log=lambda m: None)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 3  # the CSV stays
    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert {"ccc/val_mean", "ccc/val_valence", "ccc/val_arousal", "loss/train", "lr",
            "ccc/val_mean_smoothed"} <= set(tags["scalars"])
    means = ea.Scalars("ccc/val_mean")
    assert [e.step for e in means] == [0, 1, 2]
    assert [e.value for e in means] == pytest.approx([float(r["val_ccc_mean"]) for r in rows], abs=1e-6)
    assert [e.value for e in ea.Scalars("lr")] == pytest.approx([float(r["lr"]) for r in rows])
    assert "predictions/val" in tags["images"]
    img = ea.Images("predictions/val")[0]
    assert img.width > 100 and img.height > 100


def test_run_records_its_hyperparameters_for_the_hparams_plugin(corpus, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    from avpipe.fusion.train import train

    out = tmp_path / "run"
    train(small_config(corpus, "concat", out, epochs=1, lr=3e-3, model={"hidden": 16}), log=lambda m: None)
    mux = EventMultiplexer().AddRunsFromDirectory(str(out / "tensorboard"))
    mux.Reload()
    found = {}
    for run, content in mux.PluginRunToTagToContent("hparams").items():
        for tag, raw in content.items():
            data = plugin_data_pb2.HParamsPluginData.FromString(raw)
            if data.HasField("session_start_info"):
                found = {k: v for k, v in data.session_start_info.hparams.items()}
    assert found, "no HParams session in the run's event files"
    assert found["lr"].number_value == pytest.approx(3e-3) and found["fusion"].string_value == "concat"
    assert found["model.hidden"].number_value == 16 and "out" not in found and "device" not in found
