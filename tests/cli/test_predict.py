"""``avpipe evaluate`` and ``avpipe predict`` live in their own command module (avpipe/cli/predict.py),
beside ``train`` in avpipe/cli/train.py: one module per command group."""
from __future__ import annotations

import ast
from pathlib import Path

from click.testing import CliRunner

from avpipe.cli import COMMANDS, main

CLI = Path(__file__).resolve().parents[2] / "avpipe" / "cli"


def _commands_defined(module: str) -> set[str]:
    """Names given to ``@click.command(NAME)`` in one module of avpipe/cli/."""
    tree = ast.parse((CLI / f"{module}.py").read_text(encoding="utf-8"))
    return {d.args[0].value for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            for d in node.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command"
            and d.args and isinstance(d.args[0], ast.Constant)}


def test_evaluate_and_predict_are_the_predict_module_and_train_is_train():
    assert COMMANDS["evaluate"] == "avpipe.cli.predict:evaluate_cmd"
    assert COMMANDS["predict"] == "avpipe.cli.predict:predict_cmd"
    assert _commands_defined("predict") == {"evaluate", "predict"}
    assert _commands_defined("train") == {"train"}


def test_both_commands_load_through_the_table_and_share_the_threads_option():
    for name in ("evaluate", "predict"):
        r = CliRunner().invoke(main, [name, "--help"])
        assert r.exit_code == 0, r.output
        assert "--num-threads" in r.output and "torch threads" in r.output
