"""Config errors as usage errors (exit 2, one line, nothing touched) and ``avpipe config show``."""
from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner

from avpipe.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def videos(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    return d


@pytest.mark.parametrize("toml,expected", [
    ("[stages.faces]\nkey_interval = 0\n", "Error: [stages.faces] key_interval = 0: must be >= 1"),
    ('[stages.visual]\nbackbone = "resnet"\n',
     'Error: [stages.visual] backbone = "resnet": unknown backbone; known: dlib, dlib-torch, facenet-vggface2, fer2013-mini-xception, fer2013-mini-xception-emb, fer2013-mini-xception-logits, hog, hsemotion-enet-b0, hsemotion-enet-b0-va, hsemotion-enet-b2, ir50, swin-base'),
    ('[stages.logmel]\nanchor = "forwrd"\n',
     "Error: [stages.logmel] anchor = \"forwrd\": must be one of 'forward', 'causal' or 'centered'"),
    ('[stages.logmel]\npool = "max"\n', "Error: [stages.logmel] pool = \"max\": must be one of 'mean', "
                                        "'mean_std' or 'patch'"),
    ("[stages.logmel]\nn_mels = 64.5\n", "Error: [stages.logmel] n_mels = 64.5: must be a whole number"),
])
def test_extract_bad_config_is_one_line_exit_2_before_the_cache(tmp_path, videos, toml, expected):
    """Before: a traceback with exit 1 (faces, visual), or per-video sticky failures (logmel)."""
    (tmp_path / "bad.toml").write_text(toml)
    cache = tmp_path / "cache"
    r = _invoke("extract", "--videos", videos, "--cache", cache, "--config", tmp_path / "bad.toml", "--no-progress")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == expected and r.stdout == ""
    assert "Traceback" not in r.output
    assert not cache.exists()  # nothing was created, no video was looked at


def test_extract_unreadable_config_file(tmp_path, videos):
    (tmp_path / "bad.toml").write_text("[stages.faces\n")
    r = _invoke("extract", "--videos", videos, "--cache", tmp_path / "c", "--config", tmp_path / "bad.toml")
    assert r.exit_code == 2 and r.stderr.startswith("Error: ") and "not valid TOML" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_train_bad_config_file_and_flags(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (tmp_path / "broken.toml").write_text("epochz = 3\n")
    r = _invoke("train", "--fusion", "jca", "--labels", labels, "--config", tmp_path / "broken.toml")
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("Error: [train] epochz = 3: unknown option (did you mean epochs?); valid options: ")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    (tmp_path / "bad.toml").write_text('optimizer = "sgd"\n')
    r = _invoke("train", "--fusion", "jca", "--labels", labels, "--config", tmp_path / "bad.toml")
    assert r.exit_code == 2 and r.stderr.strip() == ("Error: [train] optimizer = \"sgd\": must be one of "
                                                     "'adam' or 'adamw'")
    for flag, value, expected in (("--epochs", "0", "--epochs 0: must be >= 1"),
                                  ("--batch-size", "0", "--batch-size 0: must be >= 1"),
                                  ("--lr", "-1", "--lr -1.0: must be > 0.0")):
        r = _invoke("train", "--fusion", "jca", "--labels", labels, flag, value, "--out", tmp_path / "run")
        assert r.exit_code == 2 and r.stderr.strip() == f"Error: {expected}", r.output
        assert not (tmp_path / "run").exists()


def test_extract_help_lists_stages():
    from avpipe.pipeline.stage import stage_registry

    r = _invoke("extract", "--help")
    assert r.exit_code == 0
    text = r.output.split("Stages:", 1)[1]
    for name, cls in stage_registry().items():
        assert f"  {name} " in text and cls.description.split()[0] in text
    assert "avpipe config show --stage NAME" in text


def test_config_show_all_stages_parses_back_to_the_defaults():
    from avpipe.pipeline.config_schema import canonical_json
    from avpipe.pipeline.config import PipelineConfig

    r = _invoke("config", "show")
    assert r.exit_code == 0, r.output
    parsed = tomllib.loads(r.stdout)
    assert {"faces", "visual", "logmel", "vggish", "audio", "asr", "text"} <= set(parsed["stages"])
    cfg = PipelineConfig.from_dict(parsed)
    for name in parsed["stages"]:
        assert canonical_json(cfg.stage_config(name)) == canonical_json(PipelineConfig().stage_config(name))
    assert "# full cascade every k frames" in r.stdout  # each option's help text
    assert "# roi_rnet_top_k =  (unset)" in r.stdout


def test_config_show_one_stage_with_file(tmp_path):
    (tmp_path / "p.toml").write_text('[stages.faces]\nkey_interval = "5"\n')
    r = _invoke("config", "show", "--stage", "faces", "--config", tmp_path / "p.toml")
    assert r.exit_code == 0, r.output
    assert "[stages.faces]" in r.stdout and "[stages.logmel]" not in r.stdout
    assert "key_interval = 5\n" in r.stdout and "default: 30" in r.stdout
    assert tomllib.loads(r.stdout)["stages"]["faces"]["key_interval"] == 5
    r = _invoke("config", "show", "--stage", "faces", "--config", tmp_path / "p.toml", "--json")
    assert json.loads(r.stdout)["stages"]["faces"]["key_interval"] == 5


def test_config_show_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("[stages.faces]\nkey_interval = 0\n")
    r = _invoke("config", "show", "--config", tmp_path / "bad.toml")
    assert r.exit_code == 2 and r.stderr.strip() == "Error: [stages.faces] key_interval = 0: must be >= 1"
    r = _invoke("config", "show", "--stage", "facez")
    assert r.exit_code == 2 and "unknown stage(s) facez" in r.output


def test_config_show_train(tmp_path):
    r = _invoke("config", "show", "--train")
    assert r.exit_code == 0, r.output
    parsed = tomllib.loads(r.stdout)
    assert parsed["step_start"] == 5 and parsed["smoothing"] == [20, 50] and "epochs" not in parsed and "window" not in parsed
    assert "# early stopping" in r.stdout
    (tmp_path / "t.toml").write_text("epochs = 5\n")
    r = _invoke("config", "show", "--train", "--config", tmp_path / "t.toml")
    assert tomllib.loads(r.stdout)["epochs"] == 5


def test_config_show_train_writes_precision_under_its_stored_key(tmp_path):
    """``TrainConfig.precision`` is ``amp`` in files: ``config show`` writes the key a file holds,
    and what it writes reads back (with ``--precision``'s value)."""
    (tmp_path / "t.toml").write_text('amp = "bf16"\n')
    r = _invoke("config", "show", "--train", "--config", tmp_path / "t.toml")
    assert r.exit_code == 0, r.output
    parsed = tomllib.loads(r.stdout)
    assert parsed["amp"] == "bf16" and "precision" not in parsed
    assert "# mixed precision" in r.stdout and "default: \"auto\"" in r.stdout
    r = _invoke("config", "show", "--train", "--json")
    assert json.loads(r.stdout)["amp"] == "auto"
