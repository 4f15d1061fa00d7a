"""``avpipe extract``: compute the missing cache entries of a folder of videos.

The command parses and checks flags, then hands over to :func:`avpipe.pipeline.runner.run_extract`;
torch and the stages load only inside the body, so ``--help`` and flag errors stay fast.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from avpipe.cli.common import cache_option, cache_root, split_list
from avpipe.cli.config import StageListCommand, load_pipeline_config
from avpipe.cli.errors import UsageFailure, fail
from avpipe.cli.params import DEVICE, parse_weights, resolve_jobs
from avpipe.display import safe_name


@click.command("extract", cls=StageListCommand, epilog="""Examples:

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
@cache_option
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
                   "worker: with one worker per GPU (avpipe gpu-workers) cuda means that worker's GPU "
                   "and cuda:N runs on GPU N's worker only.")
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
    from avpipe.pipeline.types import WeightsMissingError

    if force and not only:
        raise UsageFailure("--force needs --stage NAME", usage=True)
    if only and stages:
        raise UsageFailure("use either --stage or --stages", usage=True)
    if (scheduler or scheduler_file) and backend != "dask":
        raise UsageFailure("--scheduler and --scheduler-file need --backend dask", usage=True)
    if scheduler and scheduler_file:
        raise UsageFailure("use either --scheduler or --scheduler-file", usage=True)
    wmap = parse_weights(weights)
    jobs = resolve_jobs(jobs)
    config = load_pipeline_config(config_path)
    from avpipe.pipeline.threads import default_num_threads

    runtime = Runtime(device=device, batch_size=batch_size, weights=wmap,
                      num_threads=num_threads or default_num_threads(jobs))
    _require_videos(videos_dir)
    try:
        summary = run_extract(cache_root(cache_dir), videos_dir, config, stages=split_list(stages),
                              only=only, force=force, retry_failed=retry_failed, jobs=jobs,
                              backend=backend, scheduler=scheduler, runtime=runtime, progress=progress,
                              scheduler_file=scheduler_file, auto_threads=num_threads is None)
    except WeightsMissingError as e:
        fail(str(e), 2)
    except PlanError as e:
        raise UsageFailure(str(e), usage=True) from e
    except FileNotFoundError as e:
        raise UsageFailure(str(e), usage=True) from e
    click.echo(summary.render())
    collisions = _report_skipped(videos_dir, verbose)
    sys.exit(max(summary.exit_code, 1 if collisions else 0))


def _require_videos(videos_dir: Path) -> None:
    """A folder without a single video is a failure (exit 1, like ``predict``), not "0 files,
    all done": most often a wrong --videos path or unsupported file names. Nothing is created."""
    from avpipe.pipeline.discover import VIDEO_EXTENSIONS, iter_video_files, skipped_paths

    if next(iter(iter_video_files(videos_dir)), None) is not None:
        return
    n_skipped = len(skipped_paths(videos_dir))
    fail(f"no videos under {safe_name(str(videos_dir))} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}"
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

