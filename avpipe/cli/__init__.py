"""The ``avpipe`` command line: every click command, one module per command group.

Layout (lhotse's ``bin/modes`` is the model): this module holds :func:`main` and the table of
commands; :mod:`~avpipe.cli.errors` the one error standard (exit 0/1/2), :mod:`~avpipe.cli.params`
the parameter types shared by several commands, :mod:`~avpipe.cli.common` the cache options; every
other module is one command or command group. The library never imports this package (a test
enforces it): library code raises its own exceptions and :mod:`avpipe.cli.errors` classifies them.

This package must stay importable without torch (and cheap): a command's module is imported only
when that command runs (or for ``avpipe --help``), and imports what it needs inside its body.

Adding a command: write ``avpipe/cli/NAME.py`` with a ``@click.command`` (or group) and add one
line to :data:`COMMANDS`.
"""
from __future__ import annotations

import importlib

import click

from avpipe.cli.errors import ErrorHandlingGroup, debug_option

#: Every command of ``avpipe``, loaded on first use: name -> "module:attribute".
COMMANDS: dict[str, str] = {
    "extract": "avpipe.cli.extract:extract",
    "status": "avpipe.cli.status:status",
    "inspect": "avpipe.cli.inspect:inspect",
    "cache": "avpipe.cli.cache:cache",
    "config": "avpipe.cli.config:config",
    "models": "avpipe.cli.models:models",
    "ingest-crops": "avpipe.cli.crops:ingest_crops",
    "sample": "avpipe.cli.sample:sample",
    "train": "avpipe.cli.train:train_cmd",
    "evaluate": "avpipe.cli.predict:evaluate_cmd",
    "predict": "avpipe.cli.predict:predict_cmd",
    "sweep": "avpipe.cli.experiments:sweep_cmd",
    "runs": "avpipe.cli.experiments:runs_cmd",
    "compare": "avpipe.cli.experiments:compare_cmd",
    "render": "avpipe.cli.render:render_cmd",
    "export": "avpipe.cli.export:export_cmd",
    "gpu-workers": "avpipe.cli.gpu_workers:gpu_workers_cmd",
}


class LazyGroup(ErrorHandlingGroup):
    """The ``avpipe`` group: offers :data:`COMMANDS`, importing a command's module only when asked.

    Errors of every subcommand follow :mod:`avpipe.cli.errors` (exit 0/1/2, no traceback
    unless ``--debug``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in COMMANDS:
            return cmd
        modname, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(modname), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Examples:\n\n\b\n  avpipe extract --videos clips/ --jobs 4\n"
                    "  avpipe status --videos clips/\n  avpipe cache verify\n"
                    "  avpipe --debug train --fusion jca --labels labels/   # tracebacks on errors\n\n"
                    "Exit status of every command: 0 ok, 1 runtime failure, 2 usage error.")
@click.version_option(package_name="avpipe")
@debug_option
def main() -> None:
    """avpipe: content-addressed audio-visual feature cache and fusion trainer."""
