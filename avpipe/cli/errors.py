"""One error standard for every ``avpipe`` command.

Exit status, the same everywhere:

* ``0`` — the command did what it was asked;
* ``1`` — a runtime failure: something failed while working (a damaged file, missing features,
  a video that could not be processed). One line ``Error: ...`` on stderr;
* ``2`` — a usage error: a bad flag, flag combination or config value. Click's own parse errors,
  plus the library's usage-type errors (config validation, an unknown stage, a run folder that
  the flags disagree with), one line.

No traceback is printed for anything a user can cause. An unexpected exception (a bug) is one
line naming its type, exit 1; ``avpipe --debug ...`` or ``AVPIPE_DEBUG=1`` prints its traceback.

The library never imports this module: it raises its own exception types and this layer
classifies them by class (looked up only in modules already imported, so classification never
imports torch or anything else heavy).
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from avpipe.display import safe_text

DEBUG_ENV = "AVPIPE_DEBUG"

#: Library exceptions that mean "the user asked for something invalid" (exit 2).
USAGE_ERRORS = (
    "avpipe.pipeline.config_schema:ConfigError",
    "avpipe.pipeline.plan:PlanError",
    "avpipe.fusion.run:RunConflictError",
)
#: Library exceptions that mean "something failed" and whose message says it all (exit 1).
RUNTIME_ERRORS = (
    "avpipe.fusion.labels:LabelError",
    "avpipe.fusion.guards:TrainingFailed",
    "avpipe.fusion.source:FeatureError",
    "avpipe.fusion.models.base:MissingModalityError",
    "avpipe.fusion.run:CheckpointError",
    "avpipe.fusion.predict:PredictionErrors",
    "avpipe.fusion.predict:PredictSetupError",
    "avpipe.pipeline.types:WeightsMissingError",
    "avpipe.pipeline.types:CacheError",  # read-only or damaged cache, full disk
)


class UsageFailure(click.UsageError):
    """The one usage error of avpipe (exit 2): a bad flag, flag combination or config value.

    A subclass of click's own, so click's parse errors and ours exit and print alike and
    ``except click.UsageError`` catches both. Two forms, chosen by what helps the reader:

    * default: one ``Error: ...`` line per problem (``lines``: a config error lists each bad
      key), no usage banner — for a bad value, where the usage line would bury the message;
    * ``usage=True``: click's form (the command's usage line, the ``--help`` hint, then
      ``Error: ...``) — for a wrong flag or flag combination, where the usage line is the help.

    ``message`` may be an exception with a ``lines`` attribute (:class:`~avpipe.pipeline.config.ConfigError`).
    """

    exit_code = 2

    def __init__(self, message: str | Exception, ctx: click.Context | None = None, *, usage: bool = False) -> None:
        lines = getattr(message, "lines", None) or [str(message)]
        super().__init__("\n".join(lines), ctx)
        self.lines: list[str] = list(lines)
        self.usage = usage

    def show(self, file: Any = None) -> None:
        if self.usage:
            super().show(file)
            return
        for line in self.lines:
            click.echo(f"Error: {line}", file=file, err=True)


class RuntimeFailure(click.ClickException):
    """A runtime failure reported as one line, exit 1."""

    exit_code = 1


def fail(message: str, code: int = 1) -> Any:
    """Raise one ``Error:`` line on stderr with the exit status (1 runtime failure, 2 usage), the
    same format as every other error."""
    raise (UsageFailure if code == 2 else RuntimeFailure)(message)


_debug_flag = False  # set by --debug for the current invocation


def debug_enabled() -> bool:
    """``--debug`` given to this invocation, or ``AVPIPE_DEBUG`` set (not empty, ``0``, ``false``)."""
    return _debug_flag or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def _loaded(spec: str) -> type | None:
    mod, _, attr = spec.partition(":")
    m = sys.modules.get(mod)
    cls = getattr(m, attr, None) if m is not None else None
    return cls if isinstance(cls, type) else None


def _is(exc: BaseException, specs: tuple[str, ...]) -> bool:
    return any(cls is not None and isinstance(exc, cls) for cls in map(_loaded, specs))


def classify(exc: BaseException) -> click.ClickException:
    """The one-line click exception (with its exit code) an exception becomes."""
    msg = safe_text(exc.args[0] if len(exc.args) == 1 else exc) or type(exc).__name__
    if _is(exc, USAGE_ERRORS) or getattr(exc, "usage", False) is True:  # e.g. weights missing at planning
        return UsageFailure(msg)
    if _is(exc, RUNTIME_ERRORS):
        return RuntimeFailure(msg)
    if isinstance(exc, OSError):  # missing file, permission, disk full: the message names the path
        return RuntimeFailure(safe_text(exc))
    hint = "" if debug_enabled() else f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
    return RuntimeFailure(f"unexpected {type(exc).__name__}: {msg}{hint}")


def handle(exc: Exception) -> click.ClickException:
    """Print the traceback under debug, then return the exception to raise instead."""
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    return classify(exc)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global _debug_flag
    _debug_flag = bool(value)  # reset on every invocation (in-process runners call main repeatedly)
    return value


debug_option = click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
                            help=f"Show Python tracebacks of errors (same as {DEBUG_ENV}=1).")


class ErrorHandlingGroup(click.Group):
    """A click group whose subcommands' exceptions follow the standard above."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # `avpipe status | head`: click ends quietly, as a Unix tool should
            raise
        except Exception as e:  # noqa: BLE001 - the one place that turns any error into one line
            raise handle(e) from e


def import_error_class(spec: str) -> type | None:
    """The class named ``module:attr`` (importing the module) — for tests and docs."""
    mod, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr, None)
    except ImportError:
        return None
