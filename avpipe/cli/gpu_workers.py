"""``avpipe gpu-workers``: one Dask worker per GPU (the work is in :mod:`avpipe.scale.gpu_workers`)."""
from __future__ import annotations

import sys

import click

from avpipe.cli.errors import UsageFailure


@click.command("gpu-workers", epilog="""Examples:

\b
  dask scheduler --scheduler-file /shared/sched.json &
  avpipe gpu-workers --scheduler-file /shared/sched.json            # every visible GPU
  avpipe gpu-workers --scheduler tcp://head:8786 --gpus 0,1 --nthreads 4
  avpipe extract --videos v/ --backend dask --scheduler-file /shared/sched.json --device auto""")
@click.option("--scheduler", default=None, help="Dask scheduler address the workers join.")
@click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False),
              help="Dask scheduler file (instead of --scheduler).")
@click.option("--gpus", default=None, metavar="0,1,...",
              help="GPUs to start a worker for. Default: every GPU this process sees (CUDA_VISIBLE_DEVICES).")
@click.option("--nthreads", type=click.IntRange(min=1), default=None,
              help="Task threads per worker. Default: this machine's cores divided by the workers.")
def gpu_workers_cmd(scheduler: str | None, scheduler_file: str | None, gpus: str | None,
                    nthreads: int | None) -> None:
    """Start one Dask worker per GPU and stay in the foreground (Ctrl-C or SIGTERM stops them).

    Each worker sees only its GPU (CUDA_VISIBLE_DEVICES), so `extract --device auto` or `cuda`
    puts every worker on its own card; `--device cuda:N` runs on GPU N's worker only."""
    from avpipe.scale.gpu_workers import GpuWorkersError, parse_gpus, run_workers, worker_specs

    try:
        specs = worker_specs(parse_gpus(gpus), scheduler=scheduler, scheduler_file=scheduler_file,
                             nthreads=nthreads)
    except GpuWorkersError as e:
        raise UsageFailure(str(e), usage=True) from e
    sys.exit(run_workers(specs, say=lambda m: click.echo(m, err=True)))
