"""The avpipe CLI through click's runner (in-process) on real tiny clips."""
from __future__ import annotations

import json


import pytest
from click.testing import CliRunner

from avpipe.cli import main
from tests.media import make_clip


@pytest.fixture(autouse=True, scope="module")
def _toy():
    from tests.pipeline import toy_stages as ts

    ts.register()
    yield
    ts.unregister()


@pytest.fixture()
def setup(tmp_path):
    v = tmp_path / "videos"
    make_clip(v / "a.mp4", seed=1)
    make_clip(v / "sub" / "b.mp4", seed=2, seconds=1.5, audio=True)
    (v / "broken.mp4").write_text("not a video")
    return v, tmp_path / "cache"


def _run(*args, ok=(0,)):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code in ok, r.output
    return r


def test_extract_status_inspect_cache(setup):
    v, c = setup
    r = _run("extract", "--videos", v, "--cache", c, "--stages", "toy_b", "--no-progress", ok=(1,))
    assert "FAILED probe broken.mp4" in r.output
    st = json.loads(_run("status", "--cache", c, "--videos", v, "--stages", "toy_b", "--json").output)
    assert st["n_videos"] == 3
    rows = {s["stage"]: s for s in st["stages"]}
    assert (rows["probe"]["done"], rows["probe"]["failed"], rows["probe"]["missing"]) == (2, 1, 0)
    assert (rows["toy_b"]["done"], rows["toy_b"]["failed"], rows["toy_b"]["missing"]) == (2, 0, 1)
    assert set(rows["toy_a"]) == {"stage", "fingerprint", "done", "failed", "missing", "unavailable"}
    # a config change shows up as missing work for that subtree
    cfg = c.parent / "p.toml"
    cfg.write_text('[stages.toy_b]\noffset = 3.0\n')
    st2 = json.loads(_run("status", "--cache", c, "--stages", "toy_b", "--config", cfg, "--json").output)
    assert {s["stage"]: s["done"] for s in st2["stages"]} == {"probe": 2, "toy_a": 2, "toy_b": 0}
    ins = json.loads(_run("inspect", "sub/b.mp4", "--cache", c, "--json").output)
    by = {e["stage"]: e for e in ins["entries"]}
    assert by["probe"]["attrs"]["has_audio"] is True and by["probe"]["rows"] == 15
    assert by["toy_b"]["mask_coverage"] == pytest.approx(8 / 15) and by["toy_a"]["dims"] == 2
    bad = json.loads(_run("inspect", "broken.mp4", "--cache", c, "--json").output)
    assert bad["entries"] == [] and bad["failures"][0]["stage"] == "probe"
    assert "toy_b" in _run("inspect", "a.mp4", "--cache", c).output
    # a stem or a bare file name: exit 2, one line naming the cached key to use
    for miss in ("b", "b.mp4", "other/b.mp4"):
        r = _run("inspect", miss, "--cache", c, ok=(2,))
        assert "did you mean 'sub/b.mp4'?" in r.output and "Traceback" not in r.output
    assert "toy_a" in _run("cache", "ls", "--cache", c).output
    assert "total" in _run("cache", "du", "--cache", c).output
    assert "all good" in _run("cache", "verify", "--cache", c).output
    assert "0 files" in _run("cache", "gc", "--cache", c, "--dry-run").output
    r = _run("extract", "--videos", v, "--cache", c, "--stage", "toy_a", "--force", "--no-progress", ok=(1,))
    assert "(forced)" in r.output


def test_verify_exit_status_and_recompute(setup):
    v, c = setup
    (v / "broken.mp4").unlink()
    _run("extract", "--videos", v, "--cache", c, "--stages", "toy_a", "--no-progress")
    shard = next((c / "shards" / "toy_a").rglob("*.h5"))
    shard.write_bytes(b"garbage")
    r = _run("cache", "verify", "--cache", c, ok=(1,))
    assert "BAD shards/toy_a/" in r.output and "entries dropped" in r.output
    r = _run("extract", "--videos", v, "--cache", c, "--stages", "toy_a", "--no-progress")
    assert "all done" in r.output
    r = _run("cache", "gc", "--cache", c)
    assert f"deleted {shard.relative_to(c).as_posix()}" in r.output and not shard.exists()


@pytest.mark.parametrize("args,msg", [
    (["--stages", "nope"], "unknown stage"),
    (["--force"], "--force needs --stage"),
    (["--weights", "facenet"], "NAME=PATH"),
    (["--device", "tpu"], "--device"),
])
def test_usage_errors_exit_2(setup, args, msg):
    v, c = setup
    r = CliRunner().invoke(main, ["extract", "--videos", str(v), "--cache", str(c), *args])
    assert r.exit_code == 2 and msg in r.output


def test_bad_config_and_missing_cache_exit_2(setup, tmp_path):
    v, c = setup
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"stages": {"toy_a": {"scael": 2}}}))
    r = CliRunner().invoke(main, ["extract", "--videos", str(v), "--cache", str(c), "--config", str(cfg)])
    assert r.exit_code == 2 and "scael" in r.output and "scale" in r.output
    r = CliRunner().invoke(main, ["status", "--cache", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "no avpipe cache" in r.output


def test_every_command_has_help_with_examples():
    for path in (["extract"], ["status"], ["inspect"], ["cache"], ["cache", "ls"], ["cache", "du"],
                 ["cache", "verify"], ["cache", "gc"], []):
        r = CliRunner().invoke(main, [*path, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, path


def test_pipeline_config_round_trip(tmp_path):
    from avpipe.pipeline.config import PipelineConfig

    cfg = PipelineConfig({"toy_a": {"scale": 2.5}, "toy_b": {}})
    cfg.save(tmp_path / "p.json")
    back = PipelineConfig.load(tmp_path / "p.json")
    assert back == cfg and back.stage_config("toy_a").scale == 2.5
    (tmp_path / "p.toml").write_text("[stages.toy_a]\nscale = 2.5\n[stages.toy_b]\n")
    assert PipelineConfig.load(tmp_path / "p.toml") == cfg
    with pytest.raises(ValueError, match="top-level"):
        PipelineConfig.from_dict({"stage": {}})


def test_cli_import_is_light():
    import subprocess
    import sys

    code = "import sys, avpipe.cli; print(any(m in sys.modules for m in ('torch', 'h5py', 'av')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


