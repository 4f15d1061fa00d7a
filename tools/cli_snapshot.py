"""Dump every ``avpipe`` command's ``--help`` text to one file.

Why: moving the command line between modules must not change what users see. Run it before and
after a refactor and diff the two files; any difference is then a deliberate, explained one.

    PYTHONPATH=$PWD python tools/cli_snapshot.py /tmp/cli_help_before.txt
"""
from __future__ import annotations

import argparse
import sys
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="File to write (- for stdout).")
    args = ap.parse_args(argv)
    text = snapshot()
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
