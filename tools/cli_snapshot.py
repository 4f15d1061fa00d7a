"""Dump every ``avpipe`` command's ``--help`` text (and, with ``--errors``, the output and exit
status of a fixed set of wrong invocations) to one file.

Why: moving the command line between modules must not change what users see. Run it before and
after a refactor and diff the two files; any difference is then a deliberate, explained one.

    PYTHONPATH=$PWD python tools/cli_snapshot.py /tmp/cli_help_before.txt
    PYTHONPATH=$PWD python tools/cli_snapshot.py --errors /tmp/cli_errors_before.txt
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import click
from click.testing import CliRunner


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group`` (the group itself first), in listing order."""
    out = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += command_paths(cmd, prefix + (name,))
        elif cmd is not None:
            out.append(prefix + (name,))
    return out


def snapshot() -> str:
    """The ``--help`` output and exit code of every command, one section per command."""
    from avpipe.cli import main

    runner = CliRunner()
    parts = []
    for path in command_paths(main):
        r = runner.invoke(main, [*path, "--help"], terminal_width=100)
        parts.append(f"==== avpipe {' '.join(path)} --help (exit {r.exit_code})\n{r.output}")
    return "\n".join(parts)


def _error_cases(d: Path) -> list[list[str]]:
    """Wrong invocations, one per kind of usage or runtime error the commands report before any
    real work (no models, no videos decoded), with paths under the scratch folder ``d``."""
    v, e, nope, bad = str(d / "v"), str(d / "e"), str(d / "nope"), str(d / "bad.toml")
    return [
        ["extract", "--videos", v, "--force"], ["extract", "--videos", e, "--cache", str(d / "c")],
        ["extract", "--videos", v, "--weights", "x"], ["extract", "--videos", v, "--weights", "nosuch=/x"],
        ["status", "--cache", nope], ["inspect", "zzz", "--cache", nope],
        ["cache", "verify", "--seed", "1", "--cache", e],
        ["config", "show", "--stage", "bogus"], ["config", "show", "--train", "--stage", "x"],
        ["config", "show", "--train", "--config", bad], ["models", "path", "bogus"], ["models", "fetch"],
        ["train", "--fusion", "jca", "--labels", str(d), "--resume", "--overwrite"],
        ["train", "--fusion", "jac", "--labels", "."], ["train", "--fusion", "jca", "--labels", str(d), "--config", bad],
        ["train", "--fusion", "jca", "--labels", str(d), "--epochs", "0"], ["train", "--list"],
        ["ingest-crops", "--crops", nope, "--videos", v],
        ["ingest-crops", "--crops", e, "--videos", e, "--backbone", "nope"],
        ["sweep", "--backend", "dask"], ["runs", e], ["compare", e],
        ["render", "zzz", "--cache", e, "--out", str(d / "o")],
        ["export", "--cache", e, "--features", "visual", "--format", "npz", "--out", str(d / "x"), "--labels",
         str(d), "--videos", "a"],
        ["evaluate", e], ["predict", "--run", e, "--videos", v, "--out", str(d / "f")], ["--version"],
    ]


def error_snapshot() -> str:
    """Output and exit status of :func:`_error_cases`, the scratch folder's path replaced by ``D``."""
    from avpipe.cli import main

    d = Path(tempfile.mkdtemp(prefix="avpipe-cli-snapshot-"))
    (d / "v").mkdir()
    (d / "v" / "a.mp4").write_bytes(b"")
    (d / "e").mkdir()
    (d / "f").write_text("x")
    (d / "bad.toml").write_text("nosuchkey = 1\nother = 2\n")
    os.environ["AVPIPE_CACHE"] = str(d / "no-cache")  # never the caller's cache
    runner = CliRunner()
    parts = []
    for argv in _error_cases(d):
        r = runner.invoke(main, argv, prog_name="avpipe", terminal_width=100)
        parts.append(f"==== avpipe {' '.join(argv)} (exit {r.exit_code})\n{r.output}".replace(str(d), "D"))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="File to write (- for stdout).")
    ap.add_argument("--errors", action="store_true", help="Wrong invocations' output and exit status instead.")
    args = ap.parse_args(argv)
    text = error_snapshot() if args.errors else snapshot()
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
