"""``avpipe cache ls|du|verify|gc|rebuild-index``: look after the cache.

Commands that change the cache take its lock inside :mod:`avpipe.pipeline.maintenance`; here
they only parse flags and print reports.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from avpipe.cli.common import cache_option, cache_root, echo_json, open_cache
from avpipe.cli.errors import UsageFailure
from avpipe.cli.params import DEVICE


@click.group("cache", epilog="""Examples:

\b
  avpipe cache ls
  avpipe cache du
  avpipe cache verify        # exit 1 if any shard was bad (its entries are dropped)
  avpipe cache gc --dry-run
  avpipe cache rebuild-index # when verify/gc say the index is empty or damaged""")
def cache() -> None:
    """Look after the cache: list, disk usage, verify, garbage-collect, rebuild the index."""


@cache.command("ls", epilog="Example:\n\n\b\n  avpipe cache ls --stage faces")
@cache_option
@click.option("--stage", default=None, help="Only this stage.")
@click.option("--json", "as_json", is_flag=True)
def cache_ls(cache_dir: Path | None, stage: str | None, as_json: bool) -> None:
    """Fingerprints per stage with their config, entry and failure counts."""
    from dataclasses import asdict

    with open_cache(cache_dir) as c:
        infos = c.fingerprints(stage)
    if as_json:
        echo_json([asdict(i) for i in infos])
        return
    for i in infos:
        click.echo(f"{i.stage:<10} {i.fingerprint[:16]}  v{i.version}  entries={i.n_entries} "
                   f"failures={i.n_failures}  config={json.dumps(i.config, sort_keys=True)}")


@cache.command("du", epilog="Example:\n\n\b\n  avpipe cache du --cache /data/cache")
@cache_option
@click.option("--json", "as_json", is_flag=True)
def cache_du(cache_dir: Path | None, as_json: bool) -> None:
    """Disk usage per stage and fingerprint."""
    from avpipe.pipeline.maintenance import disk_usage, human_bytes

    with open_cache(cache_dir) as c:
        du = disk_usage(c)
    if as_json:
        echo_json(du)
        return
    for stage, fps in sorted(du["stages"].items()):  # type: ignore[union-attr]
        click.echo(f"{stage:<10} {human_bytes(sum(fps.values())):>10}")
        for fp, n in sorted(fps.items()):
            click.echo(f"  {fp}  {human_bytes(n):>10}")
    click.echo(f"index      {human_bytes(du['index']):>10}")  # type: ignore[arg-type]
    click.echo(f"unreferenced {human_bytes(du['unreferenced']):>8}  (avpipe cache gc removes it)")  # type: ignore[arg-type]
    click.echo(f"total      {human_bytes(du['total']):>10}")  # type: ignore[arg-type]


@cache.command("verify", epilog="""Examples:

\b
  avpipe cache verify && echo clean
  avpipe cache verify --recompute 20           # would this machine compute the same features?
  avpipe cache verify --recompute 5 --stage visual --seed 1

\b
--recompute N recomputes N random entries from their videos and compares them
with what is stored (nothing is written or dropped); an entry that differs is
listed with the packages whose versions changed since it was computed. Exit 1
if any differs or fails.""")
@cache_option
@click.option("--recompute", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead of re-hashing: recompute N random entries and compare them with the stored ones.")
@click.option("--stage", default=None, help="With --recompute: sample entries of this stage only.")
@click.option("--seed", type=int, default=None, help="With --recompute: which entries are drawn (default: random).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="With --recompute: device for model stages.")
def cache_verify(cache_dir: Path | None, recompute: int | None = None, stage: str | None = None,
                 seed: int | None = None, device: str = "cpu") -> None:
    """Re-hash every shard and open every entry; drop entries of bad shards (exit 1 if any)."""
    from avpipe.pipeline.maintenance import verify

    if (stage is not None or seed is not None) and recompute is None:
        raise UsageFailure("--stage and --seed go with --recompute N", usage=True)
    if recompute is not None:
        _verify_recompute(cache_dir, recompute, stage, seed, device)
        return

    with open_cache(cache_dir) as c:
        rep = verify(c)  # takes the cache lock
    for rp, why in rep.bad:
        click.echo(f"BAD {rp}: {why}")
    click.echo(f"checked {rep.checked_shards} shards, {rep.checked_entries} entries: "
               + ("all good" if rep.ok else f"{len(rep.bad)} bad, {rep.dropped_entries} entries dropped "
                  "(the next extract recomputes them)"))
    sys.exit(0 if rep.ok else 1)


def _verify_recompute(cache_dir: Path | None, n: int, stage: str | None, seed: int | None, device: str) -> None:
    from avpipe.pipeline.recompute import recompute
    from avpipe.pipeline.stage import Runtime

    with open_cache(cache_dir) as c:
        if stage is not None and stage not in c.index.stages():
            raise UsageFailure(f"no entries of stage {stage!r} in this cache "
                               f"(it holds: {', '.join(c.index.stages()) or 'nothing'})", usage=True)
        results = recompute(c, n, seed=seed, stage=stage, runtime=Runtime(device=device))
    for r in results:
        click.echo(r.line())
    counts = {s: sum(r.status == s for r in results) for s in ("same", "differs", "failed", "skipped")}
    click.echo(f"recomputed {len(results)} entries: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    sys.exit(1 if counts["differs"] or counts["failed"] else 0)


@cache.command("gc", epilog="Example:\n\n\b\n  avpipe cache gc --dry-run")
@cache_option
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
def cache_gc(cache_dir: Path | None, dry_run: bool) -> None:
    """Delete shard and temporary files the index no longer references."""
    from avpipe.pipeline.maintenance import gc, human_bytes

    with open_cache(cache_dir) as c:
        rep = gc(c, dry_run=dry_run)  # takes the cache lock
    for rp in rep.files:
        click.echo(("would delete " if dry_run else "deleted ") + rp)
    for rp in rep.kept_live:
        click.echo(f"kept {rp}: a running writer holds it")
    click.echo(f"{len(rep.files)} files, {human_bytes(rep.bytes)}" + (" (dry run)" if dry_run else " freed"))


@cache.command("rebuild-index", epilog="""Example:

\b
  avpipe cache verify          # "the cache index ... has no avpipe tables ..."
  avpipe cache rebuild-index   # entries recovered from the shards
  avpipe cache verify && avpipe cache gc""")
@cache_option
def cache_rebuild_index(cache_dir: Path | None) -> None:
    """Rebuild the index from the shards' own attributes (stage, fingerprint, config, content id).

    Use it when `cache verify` or `cache gc` refuse because the index is empty, lacks its tables
    or is younger than the shards. The old index is kept beside it as index.sqlite.damaged-TIME;
    file names and failures are copied from it when it can still be read (otherwise the next
    extract rediscovers the names). Shards that cannot be read are listed and left alone."""
    from avpipe.pipeline.rebuild import rebuild_index

    root = cache_root(cache_dir)
    try:
        rep = rebuild_index(root)
    except FileNotFoundError as e:
        raise UsageFailure(str(e), usage=True) from e
    for rp, why in rep.skipped:
        click.echo(f"SKIPPED {rp}: {why}")
    click.echo(f"rebuilt {root / 'index.sqlite'}: {rep.entries} entries of {rep.fingerprints} fingerprints "
               f"from {rep.shards} shards; {rep.copied_files} file names and {rep.copied_failures} "
               "failures kept from the old index"
               + (f" (moved aside as {rep.old_index})" if rep.old_index else ""))
    sys.exit(1 if rep.skipped else 0)

