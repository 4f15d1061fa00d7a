"""``avpipe status``: per stage, how many videos are done, failed or missing.

Only looks: no weights are fetched or converted and nothing is written, so it is safe to run
beside a running ``extract``.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from avpipe.cli.common import cache_option, echo_json, open_cache, split_list
from avpipe.cli.config import load_pipeline_config
from avpipe.cli.errors import UsageFailure, fail


@click.command("status", epilog="""Examples:

\b
  avpipe status                       # every video the cache knows
  avpipe status --videos clips/ --json

\b
JSON form (stable):
  {"cache": str, "videos": str|null, "n_videos": int,
   "stages": [{"stage": str, "fingerprint": str|null, "done": int,
               "failed": int, "missing": int, "unavailable": str|null}, ...]}
done + failed + missing = n_videos; fingerprints are those of the current
config (--config); "unavailable" says why a stage cannot run (e.g. weights).""")
@cache_option
@click.option("--videos", "videos_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="Count over the videos in this folder instead of all known videos.")
@click.option("--stages", default=None, help="Comma-separated stages. Default: as extract (every stage "
                                                 "except the opt-in ones, or the config's [features] stages).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(cache_dir: Path | None, videos_dir: Path | None, stages: str | None,
           config_path: Path | None, as_json: bool) -> None:
    """Per stage: how many videos are done, failed, missing."""
    from avpipe.pipeline.plan import PlanError
    from avpipe.pipeline.report import status as status_report

    with open_cache(cache_dir) as cache:
        try:  # status only looks: no weights fetched or converted, nothing written
            rep = status_report(cache, videos_dir, load_pipeline_config(config_path), split_list(stages))
        except PlanError as e:
            raise UsageFailure(str(e), usage=True) from e
        except sqlite3.DatabaseError as e:
            fail(f"cannot read the cache index of {cache.root}: {e}")
    if as_json:
        echo_json(rep)
        return
    click.echo(f"cache {rep['cache']}: {rep['n_videos']} videos")
    w = max([len(s["stage"]) for s in rep["stages"]] + [5])
    click.echo(f"  {'stage':<{w}}  {'done':>6} {'failed':>6} {'missing':>7}  fingerprint")
    for s in rep["stages"]:
        click.echo(f"  {s['stage']:<{w}}  {s['done']:>6} {s['failed']:>6} {s['missing']:>7}  "
                   f"{(s['fingerprint'] or '-')[:16]}"
                   + (f"  ({s['unavailable'].splitlines()[0]})" if s["unavailable"] else ""))

