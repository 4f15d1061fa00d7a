"""Options and helpers shared by the cache commands (``extract``, ``status``, ``inspect``, ``cache``).

Why one module: every one of them takes the same ``--cache`` option and opens the cache the same
way (read-only, a damaged index as one line and exit 1), so a change to either is made once.
Cheap to import (click only); the cache classes load inside the functions.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from avpipe.cli.errors import UsageFailure


def cache_option(f: Any) -> Any:
    """``--cache DIR`` (default ``$AVPIPE_CACHE`` or ``./cache``), the same on every cache command."""
    return click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, show_default="$AVPIPE_CACHE or ./cache",
                        help="Cache root (index.sqlite and shards/).")(f)


def cache_root(cache_dir: Path | None) -> Path:
    """``--cache`` as an absolute path (the default resolved here, so messages name the real folder)."""
    from avpipe.pipeline.runner import default_cache_root

    return (cache_dir or default_cache_root()).expanduser().absolute()


def open_cache(cache_dir: Path | None) -> Any:
    """The cache, opened read-only (commands that change it lock it and write through
    ``Cache.lock``). A damaged or unreadable index (``CacheError``) is one line and exit 1, by
    the error group like every ``CacheError`` of the cache commands."""
    from avpipe.pipeline.store import Cache

    try:
        return Cache(cache_root(cache_dir))
    except FileNotFoundError as e:  # no cache there: the --cache flag is wrong
        raise UsageFailure(str(e), usage=True) from e


def split_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [s.strip() for s in value.split(",") if s.strip()]


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))

