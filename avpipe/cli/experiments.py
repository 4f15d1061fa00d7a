"""``avpipe sweep | runs | compare`` — many runs on one cache, and the tables they lead to.

Heavy imports (torch, matplotlib) happen inside the command bodies so that ``avpipe --help``
stays fast. Exit status: 0 ok, 1 something failed (a cell, a run folder unreadable), 2 usage.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from avpipe.cli.errors import UsageFailure
from avpipe.cli.params import DEVICE, parse_cli_value


def _usage(msg: str) -> None:
    raise UsageFailure(msg)


def _csv_values(s: str) -> list[Any]:
    return [parse_cli_value(v.strip()) for v in s.split(",") if v.strip()]


@click.command("sweep", epilog="""Examples:

\b
  avpipe sweep --config sweep.toml
  avpipe sweep --labels labels/ --cache cache/ --fusion jca,audio,visual --seeds 0,1,2 \\
               --set lr=1e-3,3e-4 --set window=64 --epochs 20 --out runs/grid
  avpipe sweep --config sweep.toml --jobs 2          # two worker processes
  avpipe sweep --config sweep.toml --dry-run         # list the cells
  avpipe sweep --config sweep.toml --backend dask --scheduler-file sched.json
  avpipe sweep --config sweep.toml --shard 3/8       # SLURM array task 3 of 8

\b
sweep.toml:
  [sweep]
  out = "runs/grid"
  [base]                    # any `avpipe train` option (TrainConfig field)
  labels = "labels/"
  cache = "cache/"
  epochs = 20
  [grid]                    # lists: every combination is one run
  fusion = ["jca", "audio", "visual"]
  features = ["visual=visual,audio=logmel"]
  seed = [0, 1, 2]
  lr = [1e-3, 3e-4]
  "model.hidden" = [64, 128]

\b
Relative paths in a sweep file (labels, cache, split_file, out) are relative to the file.
A --set with one value is a base option (not part of the folder names).

\b
Rerunning the same command continues a killed sweep: finished cells (completed.json in
their folder) are skipped, interrupted ones resume from their last epoch. Several sweeps
(processes, machines, array tasks) may share one --out: each cell is claimed (a lock on
<cell>/.claim) before it trains, so it is trained once; a cell whose claimant died is
claimed again and resumed.
Exit status: 0 all cells finished, 1 some cell failed, 2 usage error.""")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Sweep file (TOML/JSON) with [sweep], [base], [grid]; flags extend/override it.")
@click.option("--fusion", default=None, help="Comma-separated models (grid).")
@click.option("--features", "features", multiple=True,
              help="A feature set modality=stage[@fp],... (repeat the flag for several: grid).")
@click.option("--seeds", default=None, help="Comma-separated seeds (grid).")
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2",
              help="Grid over a TrainConfig field or model.OPTION (repeatable).")
@click.option("--labels", default=None, help="Label folder/CSV (base option).")
@click.option("--cache", default=None, help="Cache root (base option; default $AVPIPE_CACHE or ./cache).")
@click.option("--epochs", type=int, default=None, help="Epochs per cell (base option).")
@click.option("--device", type=DEVICE, default=None, help="auto | cpu | cuda | cuda:N (base option).")
@click.option("--out", default=None, help="Sweep folder (one run folder per cell inside).")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="name,split lines or JSON {train: [...], val: [...]} (base option, as for train).")
@click.option("--num-threads", type=click.IntRange(min=1), default=None,
              help="torch threads per cell (default: the free cores shared among the workers; on Dask, "
                   "the worker's machine's). Not part of a cell's hash.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (joblib/loky); each keeps its loaded bank between cells.")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky", show_default=True,
              help="loky: processes on this machine (--jobs); dask: each cell a task on a Dask cluster.")
@click.option("--scheduler", default=None, help="Dask scheduler address (with --backend dask).")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False),
              help="Dask scheduler file (with --backend dask), as dask-jobqueue or `dask scheduler` write it.")
@click.option("--shard", default=None, metavar="K/N",
              help="Train only shard K of N of the grid (cells K, K+N, ...): one SLURM array task each.")
@click.option("--dry-run", is_flag=True, help="List the cells and whether they are finished; train nothing.")
def sweep_cmd(config_file, fusion, features, seeds, sets, labels, cache, epochs, device, out, split_file,
              num_threads, jobs, backend, scheduler, scheduler_file, shard, dry_run) -> None:
    """Train a grid of runs (models x features x seeds x options), resumably."""
    from avpipe.fusion.sweep import (SweepError, SweepSpec, expand, is_finished, parse_shard, run_sweep,
                                     shard_cells)

    if (scheduler or scheduler_file) and backend != "dask":
        _usage("--scheduler and --scheduler-file need --backend dask")
    if backend == "dask" and not (scheduler or scheduler_file):
        _usage("--backend dask needs --scheduler ADDR or --scheduler-file FILE")
    if scheduler and scheduler_file:
        _usage("use either --scheduler or --scheduler-file")
    try:
        shard_kn = parse_shard(shard) if shard else None
    except SweepError as e:
        _usage(str(e))

    try:
        spec = SweepSpec.load(config_file) if config_file else SweepSpec()
    except SweepError as e:
        _usage(str(e))
    if fusion:
        spec.grid["fusion"] = [f.strip() for f in fusion.split(",") if f.strip()]
    if features:
        spec.grid["features"] = list(features)
    if seeds:
        try:
            spec.grid["seed"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            _usage(f"--seeds {seeds!r}: expected comma-separated integers")
    for kv in sets:
        k, eq, v = kv.partition("=")
        if not eq or not k.strip() or not v.strip():
            _usage(f"--set {kv!r}: expected KEY=V1,V2,...")
        values = _csv_values(v)
        if len(values) == 1:  # one value is not a grid axis: a base option, not in folder names
            spec.grid.pop(k.strip(), None)
            spec.base[k.strip()] = values[0]
        else:
            spec.grid[k.strip()] = values
    for k, v in (("labels", labels), ("cache", cache), ("epochs", epochs), ("device", device),
                 ("split_file", split_file), ("num_threads", num_threads)):
        if v is not None:
            spec.base[k] = v
            spec.relative_to.pop(k, None)  # a flag's path is relative to here, not to the file
    if "cache" not in spec.base:
        from avpipe.pipeline.runner import default_cache_root

        spec.base["cache"] = str(default_cache_root())
    if not spec.base.get("labels"):
        _usage("no labels: give --labels or labels in the sweep file's [base]")
    if out:
        spec.out = out
    try:
        cells = expand(spec)
    except SweepError as e:
        _usage(str(e))
    if not cells:
        _usage("the sweep has no cells")
    cells = shard_cells(cells, shard_kn)
    if not dry_run:
        for what in ("labels", "cache", "split_file"):
            if spec.base.get(what) and not Path(str(spec.resolve(what, spec.base[what]))).exists():
                _usage(f"{what} {spec.resolve(what, spec.base[what])!r} does not exist")
    if dry_run:
        for c in cells:
            state = "finished" if is_finished(Path(spec.out) / c.name, c) else "todo"
            click.echo(f"{state:<8}  {Path(spec.out) / c.name}")
        click.echo(f"{len(cells)} cells")
        return
    try:
        res = run_sweep(spec, jobs=jobs, log=lambda m: click.echo(m, err=True), backend=backend,
                        scheduler=scheduler, scheduler_file=scheduler_file, shard=shard_kn)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished cells are kept; rerun the same command to continue "
                   f"({spec.out})", err=True)
        sys.exit(130)
    click.echo(res.render())
    if any(r["status"] != "failed" for r in res.results):
        from avpipe.fusion.compare import collect_runs, render_table, summarize

        runs = collect_runs([res.out])
        if runs:
            click.echo("\n" + render_table(summarize(runs)))
    sys.exit(res.exit_code)


@click.command("runs", epilog="""Examples:

\b
  avpipe runs                 # every run under ./runs
  avpipe runs runs/grid

\b
One line per run: status, best validation CCC (epoch), and the config values
that differ between the runs listed.""")
@click.argument("directory", required=False, default="runs", type=click.Path())
def runs_cmd(directory) -> None:
    """List runs under DIRECTORY with their config differences and best validation CCC."""
    from avpipe.fusion.compare import CompareError, collect_runs, render_runs

    try:
        runs = collect_runs([directory])
    except CompareError as e:
        _usage(str(e))
    if not runs:
        _usage(f"no run folders (config.json) under {directory}")
    click.echo(render_runs(runs, Path(directory).resolve() if Path(directory).is_dir() else None))


@click.command("compare", epilog="""Examples:

\b
  avpipe compare runs/grid                       # every run under it
  avpipe compare runs/jca runs/audio --out paper/ --per-video

\b
Writes compare.csv, compare.md and compare.png (and per_video.csv/.md with
--per-video) to --out (default: the first folder given). Runs that differ only by
seed form one row: mean ± sample std over seeds. Each run counts once: a copied run
folder (same run id) and a second run with the same config and seed are left out,
with a warning naming both folders.""")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Where to write the tables and the PNG.")
@click.option("--per-video", is_flag=True, help="Also the per-video CCC table.")
def compare_cmd(paths, out, per_video) -> None:
    """The comparison table of runs: model, features, valence, arousal, mean, smoothed."""
    from avpipe.fusion.compare import (CompareError, collect_runs, duplicate_notes, markdown_table, per_video_table,
                                       render_table, summarize, write_outputs)

    try:
        runs = collect_runs(paths)
    except CompareError as e:
        _usage(str(e))
    if not runs:
        _usage(f"no run folders (config.json) under {', '.join(paths)}")
    rows = summarize(runs)
    for note in duplicate_notes(rows):
        click.echo(f"warning: {note}", err=True)
    click.echo(render_table(rows))
    if per_video:
        h, b = per_video_table(rows)
        click.echo("\nper-video CCC (mean of valence and arousal; averaged over seeds)\n" + markdown_table(h, b))
    target = Path(out) if out else (Path(paths[0]) if Path(paths[0]).is_dir() else Path("."))
    files = write_outputs(rows, target, per_video=per_video)
    click.echo("written: " + ", ".join(str(f) for f in files))
