"""Click parameter types shared by the commands (closed sets as choices, checked at parse time).

Why here and not in the commands: ``--device`` and ``--fusion`` appear in several commands and
must accept and refuse the same values everywhere, with the same message, and without importing
torch (``--fusion bogus`` is refused in well under a second, before any model code loads).
"""
from __future__ import annotations

from typing import Any

import click

from avpipe.cli.errors import UsageFailure
from avpipe.registry import closest_name


class DeviceType(click.ParamType):
    """``auto | cpu | cuda | cuda:N | mps`` (a closed set with an index, so not a plain Choice)."""

    name = "device"

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Case and spaces forgiven; the check itself is the train config's (one rule for a flag
        and a config file), imported here rather than at the top so ``--help`` stays cheap."""
        from avpipe.fusion.config import check_device

        v = str(value).strip().lower()
        try:
            return check_device(v)
        except ValueError:
            self.fail(f"{value!r}: use auto, cpu, cuda, cuda:N or mps", param, ctx)


DEVICE = DeviceType()


def fusion_model_names() -> tuple[str, ...]:
    """Names of the fusion models, from the model registry's table of built-ins and whatever is
    registered in-process (:func:`avpipe.fusion.models.model_names`), without importing torch or
    any model module; every name listed here is one the registry can build."""
    from avpipe.fusion.models import model_names

    return tuple(model_names())


class FusionChoice(click.Choice):
    """``--fusion``: one of the registered models (listed in ``--help`` and in the error)."""

    def __init__(self) -> None:
        super().__init__(fusion_model_names())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        """The registry's names when asked, so models registered after the command was built count."""
        return fusion_model_names()

    @choices.setter
    def choices(self, value: Any) -> None:
        """click.Choice assigns its choices; the registry stays their one source."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        """A near miss (``jac``, ``JCA``, ``maven_paper``) names the model it probably meant."""
        if isinstance(value, str) and value not in self.choices:
            near = closest_name(value, [str(c) for c in self.choices], typo=True)
            if near:
                self.fail(f"{value!r} is not a fusion model; did you mean {near!r}? "
                          f"(known: {', '.join(map(str, self.choices))})", param, ctx)
        return super().convert(value, param, ctx)


def resolve_jobs(jobs: int) -> int:
    """``--jobs``: ``1`` = in this process, ``N`` workers, ``0`` or ``-1`` = one per CPU core this
    process may use (the same count the thread defaults divide)."""
    from avpipe.pipeline.threads import available_cores

    return available_cores() if jobs in (0, -1) else jobs


def parse_cli_value(text: str) -> Any:
    """A flag's VALUE: JSON when it parses (``256``, ``[64, 128]``, ``true``), else the string."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_weights(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--weights NAME=PATH`` (repeatable) as a dict; a malformed item or an unknown NAME is a
    usage error (a misspelt NAME would otherwise be ignored silently and the default weights used)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageFailure(f"--weights {item!r}: expected NAME=PATH", usage=True)
        out[name] = path
    if out:
        from avpipe.extractors.weights import weight_specs
        from avpipe.pipeline.stage import stage_registry

        stage_registry()  # built-ins and $AVPIPE_PLUGINS register their weights on import
        known = weight_specs()
        unknown = sorted(set(out) - set(known))
        if unknown:
            raise UsageFailure(f"--weights: unknown weights name(s) {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(sorted(known))} (see `avpipe models list`)", usage=True)
    return out


#: ``--num-threads`` of the commands that run a model (train, evaluate, predict).
threads_option = click.option(
    "--num-threads", type=click.IntRange(min=1), default=None,
    help="torch threads (default: the cores this process may use).")


def set_threads(n: int | None) -> None:
    """Apply ``--num-threads`` (default: the cores this process may use) before torch works."""
    from avpipe.pipeline.threads import apply_torch_threads, default_num_threads

    apply_torch_threads(n or default_num_threads(), import_torch=True)
