"""The ``avpipe`` command line.

This module must stay importable without torch (and cheap): commands import what they need
inside their bodies.

Adding a command group from another package: add one line to :data:`LAZY_COMMANDS`
(``"name": "module:attribute"``). The module is imported only when that command runs (or for
``avpipe --help``); a module that does not exist yet is simply not listed.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from avpipe.config_cli import StageListCommand  # cheap: click only
from avpipe.cli_errors import ErrorHandlingGroup, RuntimeFailure, UsageFailure, debug_option
from avpipe.cli_params import DEVICE, parse_weights, resolve_jobs
from avpipe.display import safe_name, safe_text

#: Commands living in other packages, loaded on first use. name -> "module:attribute".
LAZY_COMMANDS: dict[str, str] = {
    "models": "avpipe.extractors.models_cli:models",
    "train": "avpipe.fusion.cli:train_cmd",
    "evaluate": "avpipe.fusion.cli:evaluate_cmd",
    "predict": "avpipe.fusion.cli:predict_cmd",
    "sample": "avpipe.sample.cli:sample",
    "config": "avpipe.config_cli:config",
    "sweep": "avpipe.fusion.experiments_cli:sweep_cmd",
    "runs": "avpipe.fusion.experiments_cli:runs_cmd",
    "compare": "avpipe.fusion.experiments_cli:compare_cmd",
    "render": "avpipe.render:render_cmd",
    "ingest-crops": "avpipe.extractors.crops_cli:ingest_crops",
    "export": "avpipe.export_cli:export_cmd",
}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package does not exist yet
        return False


class LazyGroup(ErrorHandlingGroup):
    """A click group that also offers :data:`LAZY_COMMANDS` whose modules exist.

    Errors of every subcommand follow :mod:`avpipe.cli_errors` (exit 0/1/2, no traceback
    unless ``--debug``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [n for n, target in LAZY_COMMANDS.items() if _module_exists(target.split(":")[0])]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in LAZY_COMMANDS:
            return cmd
        modname, attr = LAZY_COMMANDS[name].split(":")
        if not _module_exists(modname):
            return None
        mod = importlib.import_module(modname)
        return getattr(mod, attr, None)


def _cache_option(f: Any) -> Any:
    return click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, show_default="$AVPIPE_CACHE or ./cache",
                        help="Cache root (index.sqlite and shards/).")(f)


def _cache_root(cache_dir: Path | None) -> Path:
    from avpipe.pipeline.runner import default_cache_root

    return (cache_dir or default_cache_root()).expanduser().absolute()


def _open_cache(cache_dir: Path | None) -> Any:
    """The cache, opened read-only (commands that change it lock it and write through
    ``Cache.lock``); a damaged or unreadable index is one line and exit 1."""
    from avpipe.pipeline.store import Cache
    from avpipe.pipeline.types import CacheError

    try:
        return Cache(_cache_root(cache_dir))
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from e
    except CacheError as e:
        _fail(str(e))


def _fail(message: str, code: int = 1) -> Any:
    """One ``Error:`` line on stderr and the exit status (1 runtime failure, 2 usage), the same
    format as every other error (:mod:`avpipe.cli_errors`)."""
    raise (UsageFailure if code == 2 else RuntimeFailure)(message)


def _split_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [s.strip() for s in value.split(",") if s.strip()]


def _load_config(path: Path | None) -> Any:
    """The checked pipeline config; a bad one exits 2 with one line per problem (nothing touched)."""
    from avpipe.config_cli import load_pipeline_config

    return load_pipeline_config(path)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Examples:\n\n\b\n  avpipe extract --videos clips/ --jobs 4\n"
                    "  avpipe status --videos clips/\n  avpipe cache verify\n"
                    "  avpipe --debug train --fusion jca --labels labels/   # tracebacks on errors\n\n"
                    "Exit status of every command: 0 ok, 1 runtime failure, 2 usage error.")
@click.version_option(package_name="avpipe")
@debug_option
def main() -> None:
    """avpipe: content-addressed audio-visual feature cache and fusion trainer."""


# -- extract -----------------------------------------------------------------------------------
@main.command(cls=StageListCommand, epilog="""Examples:

\b
  avpipe extract --videos clips/                       # every stage, cached by content
  avpipe extract --videos clips/ --stages probe,logmel --jobs 4
  avpipe extract --videos clips/ --stage faces --force # recompute faces and its dependents
  avpipe extract --videos clips/ --config pipeline.toml --retry-failed
  avpipe extract --videos clips/ --backend dask --scheduler tcp://10.0.0.5:8786
  avpipe extract --videos clips/ --verbose             # also list paths discovery skipped

\b
Exit status: 0 all done, 1 some (stage, video) failed or was skipped, 2 usage error.
Earlier failures are not retried unless --retry-failed (or the stage's config changed).
Extra stages: set AVPIPE_PLUGINS=my.module,other.module (modules that @register_stage).""")
@click.option("--videos", "videos_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder searched recursively for videos (or one video file).")
@_cache_option
@click.option("--stages", "stages", default=None, help="Comma-separated stages (plus what they need). Default: every stage except the "
                   "opt-in ones (visual_clip, egemaps, speech, speech_segments), or a preset's [features] "
                   "stages (--config rja).")
@click.option("--stage", "only", default=None, help="Run only this stage (and what it needs).")
@click.option("--force", is_flag=True, help="With --stage: recompute it and its dependents for every video.")
@click.option("--retry-failed", is_flag=True, help="Retry (stage, video) pairs that failed in earlier runs.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='Pipeline config, JSON or TOML: {"stages": {"logmel": {...}}}.')
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=-1),
              help="Parallel worker processes (1 = in this process; 0 or -1 = one per CPU core).")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky", show_default=True,
              help="joblib backend: local process pool, or a Dask cluster.")
@click.option("--scheduler", default=None, help="Dask scheduler address (with --backend dask). "
              "Without it (and --scheduler-file) a local in-process Dask cluster is started. Tasks "
              "are sized from the cluster's worker threads, asked at each stage.")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False),
              help="Dask scheduler file (dask scheduler --scheduler-file, dask-jobqueue, SLURM).")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help="auto | cpu | cuda | cuda:N (never part of a fingerprint). On Dask it is read on each "
                   "worker: with one worker per GPU (dask-cuda) cuda means that worker's GPU.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Frames per model call where a stage batches (never part of a fingerprint).")
@click.option("--num-threads", type=click.IntRange(min=1), default=None,
              help="Threads per worker (torch, BLAS). Default: the free cores divided by --jobs, at least 1; "
                   "on Dask, the free cores of the worker's machine divided by its threads.")
@click.option("--weights", "weights", multiple=True, metavar="NAME=PATH",
              help="Use this file for weights NAME (repeatable).")
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
@click.option("--verbose", "-v", is_flag=True, help="List the paths discovery skipped (dangling links, loops ...).")
def extract(videos_dir: Path, cache_dir: Path | None, stages: str | None, only: str | None, force: bool,
            retry_failed: bool, config_path: Path | None, jobs: int, backend: str, scheduler: str | None,
            scheduler_file: str | None, device: str, batch_size: int, num_threads: int | None, weights: tuple[str, ...],
            progress: bool, verbose: bool) -> None:
    """Compute missing cache entries for every video under --videos."""
    from avpipe.pipeline.plan import PlanError
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.stage import Runtime
    from avpipe.pipeline.types import CacheError, WeightsMissingError

    if force and not only:
        raise click.UsageError("--force needs --stage NAME")
    if only and stages:
        raise click.UsageError("use either --stage or --stages")
    if (scheduler or scheduler_file) and backend != "dask":
        raise click.UsageError("--scheduler and --scheduler-file need --backend dask")
    if scheduler and scheduler_file:
        raise click.UsageError("use either --scheduler or --scheduler-file")
    wmap = parse_weights(weights)
    jobs = resolve_jobs(jobs)
    config = _load_config(config_path)
    from avpipe.pipeline.threads import default_num_threads

    runtime = Runtime(device=device, batch_size=batch_size, weights=wmap,
                      num_threads=num_threads or default_num_threads(jobs))
    _require_videos(videos_dir)
    try:
        summary = run_extract(_cache_root(cache_dir), videos_dir, config, stages=_split_list(stages),
                              only=only, force=force, retry_failed=retry_failed, jobs=jobs,
                              backend=backend, scheduler=scheduler, runtime=runtime, progress=progress,
                              scheduler_file=scheduler_file, auto_threads=num_threads is None)
    except WeightsMissingError as e:
        _fail(str(e), 2)
    except PlanError as e:
        raise click.UsageError(str(e)) from e
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from e
    except CacheError as e:  # read-only cache, lock file on a full disk
        _fail(str(e))
    click.echo(summary.render())
    collisions = _report_skipped(videos_dir, verbose)
    sys.exit(max(summary.exit_code, 1 if collisions else 0))


def _packages_line(recorded: dict[str, str] | None) -> str:
    """``computed with: numpy 2.2.6, torch 2.7.1 ...`` and the packages that differ now."""
    from avpipe.provenance import changed_packages

    if recorded is None:
        return "computed with: versions not recorded (written before avpipe recorded them)"
    line = "computed with: " + ", ".join(f"{n} {v}" for n, v in sorted(recorded.items()))
    changed = changed_packages(recorded)
    return line + (f"\n      DIFFERS NOW: {', '.join(changed)} (avpipe cache verify --recompute N checks "
                   f"whether features change)" if changed else "")


def _require_videos(videos_dir: Path) -> None:
    """A folder without a single video is a failure (exit 1, like ``predict``), not "0 files,
    all done": most often a wrong --videos path or unsupported file names. Nothing is created."""
    from avpipe.pipeline.discover import VIDEO_EXTENSIONS, iter_video_files, skipped_paths

    if next(iter(iter_video_files(videos_dir)), None) is not None:
        return
    n_skipped = len(skipped_paths(videos_dir))
    _fail(f"no videos under {safe_name(str(videos_dir))} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}"
          + (f"; {n_skipped} path(s) skipped: extract --verbose lists them" if n_skipped else "") + ")")


def _report_skipped(videos_dir: Path, verbose: bool) -> int:
    """Count (and with --verbose list) the paths discovery could not use as videos; name
    collisions (a video left out) are always listed. Returns how many collisions there were."""
    from avpipe.pipeline.discover import skipped_paths

    skipped = skipped_paths(videos_dir)
    collisions = [s for s in skipped if s.collision]
    for s in collisions:
        click.echo(f"  NOT PROCESSED {safe_name(s.key)}: {s.reason}")
    others = [s for s in skipped if not s.collision]
    if others:
        click.echo(f"  {len(others)} path(s) skipped during discovery (dangling links, link loops, folders "
                   "named like videos, unreadable)" + ("" if verbose else "; --verbose lists them"))
    if verbose:
        for s in others:
            click.echo(f"    skipped {safe_name(s.key)}: {s.reason}")
    return len(collisions)


# -- status ------------------------------------------------------------------------------------
@main.command(epilog="""Examples:

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
@_cache_option
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
    from avpipe.pipeline.types import CacheError

    with _open_cache(cache_dir) as cache:
        try:  # status only looks: no weights fetched or converted, nothing written
            rep = status_report(cache, videos_dir, _load_config(config_path), _split_list(stages))
        except PlanError as e:
            raise click.UsageError(str(e)) from e
        except CacheError as e:
            _fail(str(e))
        except sqlite3.DatabaseError as e:
            _fail(f"cannot read the cache index of {cache.root}: {e}")
    if as_json:
        _echo_json(rep)
        return
    click.echo(f"cache {rep['cache']}: {rep['n_videos']} videos")
    w = max([len(s["stage"]) for s in rep["stages"]] + [5])
    click.echo(f"  {'stage':<{w}}  {'done':>6} {'failed':>6} {'missing':>7}  fingerprint")
    for s in rep["stages"]:
        click.echo(f"  {s['stage']:<{w}}  {s['done']:>6} {s['failed']:>6} {s['missing']:>7}  "
                   f"{(s['fingerprint'] or '-')[:16]}"
                   + (f"  ({s['unavailable'].splitlines()[0]})" if s["unavailable"] else ""))


# -- inspect -----------------------------------------------------------------------------------
@main.command(epilog="""Examples:

\b
  avpipe inspect clips/a.mp4          # a video key (path relative to --videos)
  avpipe inspect 3fa2c1 --json        # a content id (prefix)""")
@click.argument("video")
@_cache_option
@click.option("--json", "as_json", is_flag=True)
def inspect(video: str, cache_dir: Path | None, as_json: bool) -> None:
    """Every cached entry of one VIDEO: fingerprint, rows, dims, mask coverage, attrs, failures."""
    from avpipe.pipeline.report import inspect_video
    from avpipe.pipeline.types import CacheError, NotCached

    with _open_cache(cache_dir) as cache:
        try:
            rep = inspect_video(cache, video)
        except NotCached as e:
            raise click.UsageError(str(e)) from e
        except KeyError as e:
            raise click.UsageError(safe_text(e.args[0] if e.args else e)) from e
        except (CacheError, OSError, sqlite3.DatabaseError) as e:
            _fail(safe_text(e))
    if as_json:
        _echo_json(rep)
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
        for t in (e["attrs"] or {}).get("tracks") or []:  # person tracks (faces, visual)
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
        _fail(f"{len(rep['missing_shards'])} shard(s) of this video are missing from disk; run "
              "`avpipe cache verify` to drop their entries (the next extract recomputes them)")


# -- cache ---------------------------------------------------------------------------------------
@main.group(epilog="""Examples:

\b
  avpipe cache ls
  avpipe cache du
  avpipe cache verify        # exit 1 if any shard was bad (its entries are dropped)
  avpipe cache gc --dry-run
  avpipe cache rebuild-index # when verify/gc say the index is empty or damaged""")
def cache() -> None:
    """Look after the cache: list, disk usage, verify, garbage-collect, rebuild the index."""


@cache.command("ls", epilog="Example:\n\n\b\n  avpipe cache ls --stage faces")
@_cache_option
@click.option("--stage", default=None, help="Only this stage.")
@click.option("--json", "as_json", is_flag=True)
def cache_ls(cache_dir: Path | None, stage: str | None, as_json: bool) -> None:
    """Fingerprints per stage with their config, entry and failure counts."""
    from dataclasses import asdict

    with _open_cache(cache_dir) as c:
        infos = c.fingerprints(stage)
    if as_json:
        _echo_json([asdict(i) for i in infos])
        return
    for i in infos:
        click.echo(f"{i.stage:<10} {i.fingerprint[:16]}  v{i.version}  entries={i.n_entries} "
                   f"failures={i.n_failures}  config={json.dumps(i.config, sort_keys=True)}")


@cache.command("du", epilog="Example:\n\n\b\n  avpipe cache du --cache /data/cache")
@_cache_option
@click.option("--json", "as_json", is_flag=True)
def cache_du(cache_dir: Path | None, as_json: bool) -> None:
    """Disk usage per stage and fingerprint."""
    from avpipe.pipeline.maintenance import disk_usage, human_bytes

    with _open_cache(cache_dir) as c:
        du = disk_usage(c)
    if as_json:
        _echo_json(du)
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
@_cache_option
@click.option("--recompute", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead of re-hashing: recompute N random entries and compare them with the stored ones.")
@click.option("--stage", default=None, help="With --recompute: sample entries of this stage only.")
@click.option("--seed", type=int, default=None, help="With --recompute: which entries are drawn (default: random).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="With --recompute: device for model stages.")
def cache_verify(cache_dir: Path | None, recompute: int | None = None, stage: str | None = None,
                 seed: int | None = None, device: str = "cpu") -> None:
    """Re-hash every shard and open every entry; drop entries of bad shards (exit 1 if any)."""
    from avpipe.pipeline.maintenance import verify
    from avpipe.pipeline.types import CacheError

    if (stage is not None or seed is not None) and recompute is None:
        raise click.UsageError("--stage and --seed go with --recompute N")
    if recompute is not None:
        _verify_recompute(cache_dir, recompute, stage, seed, device)
        return

    with _open_cache(cache_dir) as c:
        try:
            rep = verify(c)  # takes the cache lock
        except CacheError as e:
            _fail(str(e))
    for rp, why in rep.bad:
        click.echo(f"BAD {rp}: {why}")
    click.echo(f"checked {rep.checked_shards} shards, {rep.checked_entries} entries: "
               + ("all good" if rep.ok else f"{len(rep.bad)} bad, {rep.dropped_entries} entries dropped "
                  "(the next extract recomputes them)"))
    sys.exit(0 if rep.ok else 1)


def _verify_recompute(cache_dir: Path | None, n: int, stage: str | None, seed: int | None, device: str) -> None:
    from avpipe.pipeline.recompute import recompute
    from avpipe.pipeline.stage import Runtime

    with _open_cache(cache_dir) as c:
        if stage is not None and stage not in c.index.stages():
            raise click.UsageError(f"no entries of stage {stage!r} in this cache "
                                   f"(it holds: {', '.join(c.index.stages()) or 'nothing'})")
        results = recompute(c, n, seed=seed, stage=stage, runtime=Runtime(device=device))
    for r in results:
        click.echo(r.line())
    counts = {s: sum(r.status == s for r in results) for s in ("same", "differs", "failed", "skipped")}
    click.echo(f"recomputed {len(results)} entries: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    sys.exit(1 if counts["differs"] or counts["failed"] else 0)


@cache.command("gc", epilog="Example:\n\n\b\n  avpipe cache gc --dry-run")
@_cache_option
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
def cache_gc(cache_dir: Path | None, dry_run: bool) -> None:
    """Delete shard and temporary files the index no longer references."""
    from avpipe.pipeline.maintenance import gc, human_bytes
    from avpipe.pipeline.types import CacheError

    with _open_cache(cache_dir) as c:
        try:
            rep = gc(c, dry_run=dry_run)  # takes the cache lock
        except CacheError as e:
            _fail(str(e))
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
@_cache_option
def cache_rebuild_index(cache_dir: Path | None) -> None:
    """Rebuild the index from the shards' own attributes (stage, fingerprint, config, content id).

    Use it when `cache verify` or `cache gc` refuse because the index is empty, lacks its tables
    or is younger than the shards. The old index is kept beside it as index.sqlite.damaged-TIME;
    file names and failures are copied from it when it can still be read (otherwise the next
    extract rediscovers the names). Shards that cannot be read are listed and left alone."""
    from avpipe.pipeline.rebuild import rebuild_index
    from avpipe.pipeline.types import CacheError

    root = _cache_root(cache_dir)
    try:
        rep = rebuild_index(root)
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from e
    except CacheError as e:
        _fail(str(e))
    for rp, why in rep.skipped:
        click.echo(f"SKIPPED {rp}: {why}")
    click.echo(f"rebuilt {root / 'index.sqlite'}: {rep.entries} entries of {rep.fingerprints} fingerprints "
               f"from {rep.shards} shards; {rep.copied_files} file names and {rep.copied_failures} "
               "failures kept from the old index"
               + (f" (moved aside as {rep.old_index})" if rep.old_index else ""))
    sys.exit(1 if rep.skipped else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
