"""TrainConfig's Python names against the keys run folders store.

``precision`` (what ``--precision`` sets) is stored as ``amp``, the key every run folder, sweep
cell and canonical JSON already holds: renaming the attribute must not change a stored byte.
"""
import json

import pytest

from avpipe.fusion.config import TrainConfig
from avpipe.pipeline.config_schema import ConfigError, canonical_json


def test_a_config_json_written_with_amp_loads_into_precision(tmp_path):
    """A run folder from before the rename (its config.json holds ``amp``) loads and keeps its value."""
    old = TrainConfig().to_dict()
    old["amp"] = "bf16"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert TrainConfig.load(path).precision == "bf16"
    assert TrainConfig.load_run_config(path).precision == "bf16"


def test_a_new_config_writes_amp(tmp_path):
    cfg = TrainConfig(precision="fp16")
    cfg.save(tmp_path / "config.json")
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["amp"] == "fp16" and "precision" not in stored
    assert '"amp":"fp16"' in canonical_json(cfg) and "precision" not in canonical_json(cfg)
    assert TrainConfig.load(tmp_path / "config.json") == cfg


def test_precision_is_set_by_either_name_in_code_and_checked():
    assert TrainConfig(amp="off").precision == TrainConfig(precision="off").precision == "off"
    cfg = TrainConfig()
    cfg.precision = "bf16"
    assert cfg.to_dict()["amp"] == "bf16"
    with pytest.raises(ConfigError, match=r'\[train\] amp = "fp8"'):
        TrainConfig.from_dict({"amp": "fp8"})


def test_files_keep_the_stored_key_only():
    """A file key is what ``config.json`` holds: ``precision`` in a file is an unknown option that names ``amp``."""
    with pytest.raises(ConfigError, match=r'precision = "off": unknown option; valid options: amp, '):
        TrainConfig.from_dict({"precision": "off"})
