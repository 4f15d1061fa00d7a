"""Planning finds missing model weights before any video is touched: one message, exit 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.pipeline.plan import fingerprints
from avpipe.pipeline.stage import _REGISTRY, Runtime, Stage, StageResult, register_stage


class ToyWeights(Stage):
    """A stage whose weights exist only where the user puts them."""

    name = "toy_w"
    version = "1"
    requires = ("probe",)

    def weights_id(self):
        from avpipe.extractors.weights import file_checksum, resolve_weights, weights_override

        return file_checksum(resolve_weights("toy-weights", weights_override(self.runtime, "toy-weights")))

    def compute(self, video, inputs):
        return StageResult(data=np.zeros((len(inputs["probe"].timestamps), 1), np.float32))


@pytest.fixture(autouse=True)
def toy_weights(tmp_path, monkeypatch):
    from avpipe.extractors import weights as W

    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    spec = W.register_weights(W.WeightSpec(name="toy-weights", filename="toy.bin", source="user",
                                           description="toy model", how="copy toy.bin there"))
    register_stage(ToyWeights)
    yield spec
    _REGISTRY.pop("toy_w", None)
    W._SPECS.pop("toy-weights", None)


def test_missing_weights_fail_at_plan_time_with_one_message(tmp_path, videos, toy_log):
    cache = tmp_path / "cache"
    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(cache),
                                  "--stages", "toy_w,toy_a", "--no-progress"])
    assert r.exit_code == 2, r.output
    out = r.output
    assert out.count("Error:") == 1 and "Traceback" not in out
    assert "stage toy_w" in out and "'toy-weights'" in out
    assert f"looked for: {tmp_path / 'home' / 'weights' / 'toy.bin'}" in out
    assert "--weights toy-weights=" in out and "avpipe models fetch NAME" in out
    assert "--stages probe,toy_a" in out
    assert "--config offline" not in out  # the offline preset does not configure toy_w: no use suggesting it
    assert not cache.exists() and toy_log.lines() == []  # no video touched, no cache made


def test_weights_given_by_path_run(tmp_path, videos):
    w = tmp_path / "toy.bin"
    w.write_bytes(b"weights")
    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(tmp_path / "cache"),
                                  "--stages", "toy_w", "--weights", f"toy-weights={w}", "--no-progress"])
    assert r.exit_code == 0, r.output


def test_status_reports_missing_weights_without_failing(tmp_path, videos):
    cache = tmp_path / "cache"
    assert CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(cache),
                                     "--stages", "toy_a", "--no-progress"]).exit_code == 0
    r = CliRunner().invoke(main, ["status", "--cache", str(cache), "--stages", "toy_w,toy_a"])
    assert r.exit_code == 0 and "toy-weights" in r.output, r.output


def test_offline_preset_is_suggested_for_stages_it_configures_and_works_from_any_folder(
        tmp_path, videos, monkeypatch):
    """The default visual backbone needs a download; the hint names the packaged ``offline`` preset,
    which loads by name from a folder that has no configs/ (as for a pip-installed avpipe)."""
    from avpipe.pipeline.plan import missing_weights_message
    from avpipe.pipeline.config import PipelineConfig, resolve_config_path

    monkeypatch.chdir(tmp_path)
    nodes = fingerprints(["probe", "faces", "visual"], PipelineConfig(),
                         Runtime(weights={"facenet-vggface2": str(tmp_path / "absent.pt")}))
    msg = missing_weights_message(nodes, ["probe", "faces", "visual"])
    assert msg is not None and "`--config offline`" in msg, msg
    assert resolve_config_path("offline").is_file() and resolve_config_path("offline").parent.name == "configs"
    assert PipelineConfig.load("offline").stages["visual"]["backbone"] == "fer2013-mini-xception-emb"
    (tmp_path / "offline").mkdir()  # an existing path of that name wins over the preset
    assert resolve_config_path("offline") == Path("offline")


def test_unknown_weights_name_is_a_usage_error(tmp_path, videos):
    """`--weights vgish=PATH` (typo) must not be ignored silently while the default weights are used."""
    w = tmp_path / "toy.bin"
    w.write_bytes(b"weights")
    cache = tmp_path / "cache"
    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(cache),
                                  "--stages", "toy_a", "--weights", f"toy-weigths={w}", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "'toy-weigths'" in r.output and "toy-weights" in r.output and "Traceback" not in r.output
    assert not cache.exists()


def test_unknown_config_name_lists_the_presets(tmp_path, videos):
    r = CliRunner().invoke(main, ["extract", "--videos", str(videos), "--cache", str(tmp_path / "cache"),
                                  "--config", "offlin", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "offlin" in r.output and "preset name: " in r.output and ", offline," in r.output and "Traceback" not in r.output
    assert not (tmp_path / "cache").exists()


def test_one_exception_for_missing_weights_with_the_exit_status_of_where_it_was_found(tmp_path, videos):
    """The registry (a stage that cannot load, ``models fetch``) and planning raise the same
    class; planning's is a usage error (exit 2), the registry's a runtime failure (exit 1)."""
    from avpipe.cli.errors import classify
    from avpipe.extractors.weights import WeightsMissingError, resolve_weights
    from avpipe.pipeline.plan import preflight
    from avpipe.pipeline.types import WeightsMissingError as PipelineWeightsMissing

    assert WeightsMissingError is PipelineWeightsMissing
    with pytest.raises(WeightsMissingError) as at_load:
        resolve_weights("toy-weights")
    assert not at_load.value.usage and classify(at_load.value).exit_code == 1
    with pytest.raises(WeightsMissingError) as at_plan:
        preflight(None, ["toy_w"])
    assert at_plan.value.usage and classify(at_plan.value).exit_code == 2
    assert "cannot plan this run" in classify(at_plan.value).message
