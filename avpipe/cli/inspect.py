"""``avpipe inspect``: every cached entry of one video, with the package versions it was made with."""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import click

from avpipe.cli.common import cache_option, echo_json, open_cache
from avpipe.cli.errors import UsageFailure, fail
from avpipe.display import safe_name, safe_text
from avpipe.pipeline.person_tracks import TRACKS_ATTR


@click.command("inspect", epilog="""Examples:

\b
  avpipe inspect clips/a.mp4          # a video key (path relative to --videos)
  avpipe inspect 3fa2c1 --json        # a content id (prefix)""")
@click.argument("video")
@cache_option
@click.option("--json", "as_json", is_flag=True)
def inspect(video: str, cache_dir: Path | None, as_json: bool) -> None:
    """Every cached entry of one VIDEO: fingerprint, rows, dims, mask coverage, attrs, failures."""
    from avpipe.pipeline.report import inspect_video
    from avpipe.pipeline.types import CacheError, NotCached

    with open_cache(cache_dir) as cache:
        try:
            rep = inspect_video(cache, video)
        except NotCached as e:
            raise UsageFailure(str(e), usage=True) from e
        except KeyError as e:
            raise UsageFailure(safe_text(e.args[0] if e.args else e), usage=True) from e
        except (CacheError, OSError, sqlite3.DatabaseError) as e:
            fail(safe_text(e))
    if as_json:
        echo_json(rep)
        sys.exit(1 if rep.get("missing_shards") else 0)
    click.echo(f"content id {rep['content_id']}  keys: {', '.join(map(safe_name, rep['keys'])) or '-'}")
    for e in rep["entries"]:
        if "error" in e:
            click.echo(f"  {e['stage']:<10} {e['fingerprint'][:16]}  ERROR {safe_text(e['error'])}")
            continue
        cov = "-" if e["mask_coverage"] is None else f"{100 * e['mask_coverage']:.0f}%"
        click.echo(f"  {e['stage']:<10} {e['fingerprint'][:16]}  rows={e['rows']} shape={tuple(e['shape'])} "
                   f"{e['dtype']} mask={cov}")
        if e["attrs"]:
            click.echo(f"      attrs: {json.dumps(e['attrs'], sort_keys=True, default=str)}")
            if e["attrs"].get("warning"):  # e.g. asr: an English-only model on other speech
                click.echo(f"      WARNING: {e['attrs']['warning']}")
        for t in (e["attrs"] or {}).get(TRACKS_ATTR) or []:  # person tracks (faces, visual)
            side = f"binds *_{t['side']} labels" if t.get("side") else "no label side"
            click.echo(f"      track {t['id']}: {t['frames']} frames (rows {t['first']}-{t['last']}), "
                       f"mean box {t['mean_box']}, median centre x {t['median_cx']}, {side}")
        if e["extras"]:
            click.echo(f"      extras: {', '.join(e['extras'])}")
        click.echo("      " + _packages_line(e.get("packages")))
    for f in rep["failures"]:
        click.echo(f"  {f['stage']:<10} {f['fingerprint'][:16]}  FAILED {f['error_type']}: {safe_text(f['message'])}"
                   + ("  (transient: retried by the next extract)" if f.get("transient") else ""))
    if rep.get("missing_shards"):
        fail(f"{len(rep['missing_shards'])} shard(s) of this video are missing from disk; run "
              "`avpipe cache verify` to drop their entries (the next extract recomputes them)")



def _packages_line(recorded: dict[str, str] | None) -> str:
    """``computed with: numpy 2.2.6, torch 2.7.1 ...`` and the packages that differ now."""
    from avpipe.provenance import changed_packages

    if recorded is None:
        return "computed with: versions not recorded (written before avpipe recorded them)"
    line = "computed with: " + ", ".join(f"{n} {v}" for n, v in sorted(recorded.items()))
    changed = changed_packages(recorded)
    return line + (f"\n      DIFFERS NOW: {', '.join(changed)} (avpipe cache verify --recompute N checks "
                   f"whether features change)" if changed else "")

