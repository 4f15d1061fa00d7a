"""``avpipe config show``, the stage list in ``extract --help``, and loading a checked pipeline config.

Why a module of its own: printing the effective config and turning a :class:`ConfigError` into
a usage error (exit 2, one line per problem) are needed by several commands (``extract``,
``status``, ``train``, ``config``). Importing this module is cheap (click only): config classes
and the stage registry load inside functions.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from avpipe.cli.errors import UsageFailure


def load_pipeline_config(path: Path | None) -> Any:
    """The pipeline config of ``--config PATH`` (or the defaults), fully checked.

    Raises :class:`~avpipe.cli.errors.UsageFailure` (one line per problem) for an unreadable file, an unknown stage or option, or a bad
    value — before any cache is opened or any video is looked at.
    """
    from avpipe.pipeline.config_schema import ConfigError
    from avpipe.pipeline.config import PipelineConfig

    try:
        config = PipelineConfig.load(path) if path is not None else PipelineConfig()
        config.validate()
    except ConfigError as e:
        raise UsageFailure(e) from None
    return config


# -- extract --help: the stage list ------------------------------------------------------------
def stage_rows() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered stage, in dependency order."""
    from avpipe.pipeline.stage import stage_registry, topological_order

    reg = stage_registry()
    return [(n, (reg[n].description or "").strip().splitlines()[0] if reg[n].description else "")
            for n in topological_order()]


class StageListCommand(click.Command):
    """A click command whose ``--help`` ends with the registered stages (read when help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        try:
            rows = stage_rows()
        except Exception as e:  # a broken plugin must not hide the rest of the help
            rows = [("?", f"stage registry unavailable: {e}")]
        with formatter.section("Stages"):
            formatter.write_dl(rows)
        formatter.write_paragraph()
        formatter.write_text("Options of a stage, with defaults and help: avpipe config show --stage NAME")


# -- avpipe config show ------------------------------------------------------------------------
def render_config(cfg: Any, *, title: str | None, intro: list[str] | None = None) -> list[str]:
    """``cfg`` as TOML lines, each option preceded by its help and what it allows.

    Options that are unset (``None``) are written as comments: TOML has no null, and leaving the
    key out of a file keeps the default. The output parses back (``tomllib``) to the same config.
    """
    from avpipe.pipeline.config_schema import config_keys, config_to_dict, format_value, option_allowed, option_help

    cls = type(cfg)
    values = config_to_dict(cfg)
    defaults = config_to_dict(cls())
    lines = [f"# {x}" for x in intro or []]
    fields = dataclasses.fields(cls)
    if not fields:
        return lines + ["# (no options)", ""]
    if title:
        lines.append(f"[{title}]")
    for f, key in zip(fields, config_keys(cls)):  # key: as files store it (TrainConfig.precision is amp)
        helptext, allowed = option_help(cls, f.name), option_allowed(cls, f.name)
        comment = "; ".join(x for x in (helptext, allowed) if x)
        if values[key] != defaults[key]:
            comment += f"{'; ' if comment else ''}default: {format_value(defaults[key])}"
        if comment:
            lines.append(f"# {comment}")
        v = values[key]
        lines.append(f"# {key} =  (unset)" if v is None else f"{key} = {format_value(v)}")
    return lines + [""]


def _show_stages(config_path: Path | None, stages: tuple[str, ...], as_json: bool) -> None:
    from avpipe.pipeline.config_schema import config_to_dict
    from avpipe.pipeline.stage import stage_registry

    config = load_pipeline_config(config_path)
    reg = stage_registry()
    names = [n for n, _ in stage_rows()]
    unknown = [s for s in stages if s not in reg]
    if unknown:
        raise click.BadParameter(f"unknown stage(s) {', '.join(unknown)}; known stages: {', '.join(names)}",
                                 param_hint="--stage")
    chosen = [n for n in names if n in stages] if stages else names
    built = {n: config.stage_config(n) for n in chosen}
    if as_json:
        click.echo(json.dumps({"stages": {n: config_to_dict(c) for n, c in built.items()}}, indent=2,
                              sort_keys=True))
        return
    src = f"defaults merged with {config_path}" if config_path else "defaults"
    out = [f"# avpipe pipeline config ({src}). Save as a .toml file and pass it with --config;",
           "# keys left out keep their defaults. Every option here enters the stage's fingerprint.", ""]
    for n in chosen:
        out += render_config(built[n], title=f"stages.{n}", intro=[f"{n}: {reg[n].description}"])
    click.echo("\n".join(out).rstrip("\n"))


def _show_train(config_path: Path | None, as_json: bool) -> None:
    from avpipe.fusion.config import TrainConfig
    from avpipe.pipeline.config_schema import ConfigError

    try:
        cfg = TrainConfig.load(config_path) if config_path else TrainConfig()
    except ConfigError as e:
        raise UsageFailure(e) from None
    if as_json:
        click.echo(cfg.dumps())
        return
    src = f"defaults merged with {config_path}" if config_path else "defaults"
    intro = [f"avpipe train config ({src}). Save as a .toml file and pass it with avpipe train --config;",
             "flags given to avpipe train override it. Unset optimisation options take the model's defaults."]
    click.echo("\n".join(render_config(cfg, title=None, intro=intro)).rstrip("\n"))


@click.group("config", epilog="""Examples:

\b
  avpipe config show                          # every stage's options with defaults and help
  avpipe config show --stage faces            # one stage
  avpipe config show --config pipeline.toml   # what a config file resolves to
  avpipe config show --train                  # the trainer's options""")
def config() -> None:
    """Show the effective configuration (defaults, a config file's values, each option's help)."""


@config.command("show", epilog="""Examples:

\b
  avpipe config show --stage logmel > pipeline.toml   # a starting point to edit
  avpipe config show --config pipeline.toml --json
  avpipe config show --train --config train.toml

\b
Exit status: 0 ok, 2 bad config file or value (one line per problem).""")
@click.option("--stage", "stages", multiple=True, metavar="NAME",
              help="Only this stage (repeatable). Default: every registered stage.")
@click.option("--train", "train", is_flag=True, help="The trainer's config (TrainConfig) instead of the stages'.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Merge this JSON/TOML file over the defaults (a pipeline config, or with --train a "
                   "TrainConfig file).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the canonical values only).")
def show(stages: tuple[str, ...], train: bool, config_path: Path | None, as_json: bool) -> None:
    """Print the effective config as TOML, each option with its help text and allowed values."""
    if train and stages:
        raise UsageFailure("use either --train or --stage", usage=True)
    if train:
        _show_train(config_path, as_json)
    else:
        _show_stages(config_path, stages, as_json)
