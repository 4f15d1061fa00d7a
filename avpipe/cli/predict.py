"""``avpipe evaluate | predict``: score a trained run on its validation split, predict with it.

Both go through the one prediction path (:class:`~avpipe.fusion.predictor.Predictor`, via
:mod:`avpipe.fusion.predict` and :mod:`avpipe.fusion.submission`). Heavy imports happen inside the
command bodies so that ``avpipe --help`` stays fast. Errors follow the one standard of
:mod:`avpipe.cli.errors` (0 ok, 1 runtime failure, 2 usage error, no traceback unless ``--debug``).
"""
from __future__ import annotations

from pathlib import Path

import click

from avpipe.cli.errors import RuntimeFailure, UsageFailure
from avpipe.cli.params import DEVICE, resolve_jobs, set_threads, threads_option
from avpipe.display import safe_name, safe_text

EVALUATE_EPILOG = """Examples:

\b
  avpipe evaluate runs/jca
  avpipe evaluate runs/jca --checkpoint last --per-video
  avpipe evaluate /shared/runs/jca --cache /shared/cache   # the cache moved since training

\b
Writes RUN/eval/metrics.json and RUN/eval/per_video.csv. Exit status: 0 ok, 1 failed, 2 usage."""

PREDICT_EPILOG = """Examples:

\b
  avpipe predict --run runs/jca --videos new_clips/ --out predictions/
  avpipe predict --run runs/jca --videos test/ --out sub/ --format affwild2 --jobs 4

\b
Missing features are extracted first with the stage configs recorded in the run (any cache,
any machine: exactly the inputs the model was trained on; --jobs workers, 0 or -1 = one per CPU
core); a missing model or a changed stage version is refused with what to do. One output file
per video at the video's path under --out, or one per person (X_left.csv, X_right.csv) when the
run's face features bind a left and a right person. Values are the model's raw outputs (--clip:
clipped to [-1, 1]); csv files have frame, time, valence, arousal and one <modality>_present
column (1/0) per modality; --out/summary.csv has per file the frames, mean valence/arousal and
each modality's coverage. Exit status: 0 all written, 1 some video could not be predicted (the
others are written), 2 usage error."""


@click.command("evaluate", epilog=EVALUATE_EPILOG)
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--cache", default=None, type=click.Path(exists=True, file_okay=False),
              help="Cache root (default: the one recorded in the run).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--per-video/--no-per-video", default=False, help="Print the per-video table too.")
@threads_option
def evaluate_cmd(run: Path, cache: str | None, checkpoint: str, device: str, per_video: bool,
                 num_threads: int | None) -> None:
    """Official CCC (raw and smoothed; overall and per video) of a run on its validation split."""
    from avpipe.fusion.predict import evaluate_run

    set_threads(num_threads)
    ev = evaluate_run(run, cache=cache, device=device, which=checkpoint)
    o, s = ev.overall, ev.overall_smoothed or {}
    click.echo(f"frames {ev.n_frames}, videos {len(ev.per_video)}")
    click.echo(f"raw       V {o['valence']:.4f}  A {o['arousal']:.4f}  mean {o['mean']:.4f}")
    if s:
        click.echo(f"smoothed  V {s['valence']:.4f}  A {s['arousal']:.4f}  mean {s['mean']:.4f}")
    if per_video:
        for name, r in sorted(ev.per_video.items()):
            click.echo(f"  {safe_name(name)}: V {r['valence']:.4f} A {r['arousal']:.4f} (n={r['n_frames']})")
    click.echo(f"written: {safe_name(str(run / 'eval' / 'metrics.json'))}, "
               f"{safe_name(str(run / 'eval' / 'per_video.csv'))}")


@click.command("predict", epilog=PREDICT_EPILOG)
@click.option("--run", "run_path", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--videos", required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--cache", default=None, type=click.Path(file_okay=False),
              help="Cache root (default: the one recorded in the run).")
@click.option("--format", "fmt", type=click.Choice(["csv", "affwild2"]), default="csv", show_default=True,
              help="csv: frame,time,valence,arousal,<modality>_present...; affwild2: valence,arousal per line (.txt).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--jobs", "-j", type=click.IntRange(min=-1), default=1, show_default=True,
              help="Extraction worker processes (1 = in this process; 0 or -1 = one per CPU core).")
@click.option("--submission", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ABAW sample file (image_location,valence,arousal): also write OUT/submission.txt "
                   "with one row per listed frame; X_left/X_right rows use that person's face.")
@click.option("--clip", is_flag=True, help="Clip values to [-1, 1] (default: the model's raw outputs).")
@click.option("--extract/--no-extract", "do_extract", default=True,
              help="Extract missing features first (--no-extract: use only what is cached, e.g. crops "
                   "ingested with 'avpipe ingest-crops').")
@threads_option
def predict_cmd(run_path: str, videos: str, out: Path, cache: str | None, fmt: str, device: str, jobs: int,
                submission: str | None, clip: bool, do_extract: bool, num_threads: int | None) -> None:
    """Per-frame valence/arousal for a folder of videos (extracting missing features first).

    A video that cannot be predicted is reported and the others are still written; the exit
    status is then 1. Example of an ABAW test-set submission:

    \b
      avpipe predict --run runs/jca --videos test_videos/ --out preds/ \\
                     --submission CVPR_6th_ABAW_VA_test_set_sample.txt
    """
    from avpipe.fusion.predict import PredictionErrors, predict_videos

    set_threads(num_threads)
    if out.exists() and not out.is_dir():
        raise UsageFailure(f"--out {safe_name(str(out))} is a file; give a folder")
    try:
        files = predict_videos(run_path, videos, out, cache=cache, fmt=fmt, device=device, jobs=resolve_jobs(jobs),
                               extract=do_extract, clip=clip, log=lambda m: click.echo(m, err=True))
    except PredictionErrors as e:
        click.echo(f"wrote {len(e.written)} file(s) under {safe_name(str(out))}", err=True)
        raise
    click.echo(f"wrote {len(files)} file(s) under {safe_name(str(out))}")
    if submission:
        _write_submission(run_path, videos, out, cache, device, submission)


def _write_submission(run_path: str, videos: str, out: Path, cache: str | None, device: str, sample: str) -> None:
    """``predict --submission``: the ABAW test-set file from the cached features (exit 1 if any
    listed frame cannot be predicted; nothing is written then)."""
    from avpipe.fusion.submission import SubmissionError, run_predictor, write_submission
    from avpipe.pipeline.discover import iter_video_files

    keys = [f.key for f in iter_video_files(videos)]
    try:
        path = write_submission(sample, Path(out) / "submission.txt",
                                run_predictor(run_path, keys, cache=cache, device=device))
    except SubmissionError as e:
        raise RuntimeFailure(safe_text(e)) from None
    click.echo(f"wrote {safe_name(str(path))}")
