"""Execution: run a :class:`~avpipe.pipeline.plan.Plan` stage by stage, commit as results arrive.

* Stages run in topological order; within a stage the videos to compute are cut into tasks sized
  so every worker gets work (:func:`task_size`: about ``TASKS_PER_WORKER`` tasks per worker, at
  most ``Stage.videos_per_task`` videos each). A worker process loads a stage's model once and
  reuses it for all its tasks of that stage (:mod:`avpipe.pipeline.stage_memo`).
* A worker writes each video's result into its task's temporary shard as soon as it is computed
  (:class:`~avpipe.pipeline.shard_writer.ShardWriter`) and drops it, so a task never holds more
  than one video's result; stages that return :class:`~avpipe.pipeline.chunks.RowChunks` never
  hold even that whole.
* ``jobs=1`` runs tasks in this process (no pool); otherwise a joblib/loky process pool, or —
  ``backend="dask"`` — a Dask cluster through the ``distributed`` client, with tasks sized from
  the cluster's worker threads (asked at each stage) and torch threads from each worker's own
  cores. The same :func:`run_task` runs everywhere and returns what it wrote; only this driver
  touches the index, one transaction per task as each result arrives, so a crash loses only
  in-flight work.
* A cluster that goes away (scheduler lost, connection timed out or closed, futures cancelled)
  is the cluster's fault, not the videos': the unfinished videos are recorded as transient
  ``ClusterLost`` failures, the run stops and says so in one line.
* Any exception from a stage for one video is recorded (type, message, traceback) and that video
  is skipped by the stage's dependents (counted as *skipped*, not as their own failure); the rest
  of the batch completes. A per-frame stage whose row count differs from probe's ``n_frames``
  fails for that video.
* A dead worker (OOM kill, segfault, SIGKILL) costs at most the video that kills it: the tasks
  that never came back run once more, then one video at a time, and only a video that kills its
  worker again is recorded — with the cause (signal, OOM, disk full) read from the exit code and
  the worker's stderr. Such machine faults (and a full disk) are recorded as *transient*: the
  next run retries them without ``--retry-failed``; a bad file stays recorded.
* Local pool workers exit within about a second when the driver dies, even by SIGKILL
  (:func:`avpipe.pipeline.faults.die_with_parent`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import traceback
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.display import safe_name, safe_text
from avpipe.pipeline.chunks import n_rows
from avpipe.pipeline.entry import ShardEntry
from avpipe.pipeline.discover import source_changed
from avpipe.pipeline.faults import (CACHE_WRITE, CLUSTER_LOST, DISK_FULL, is_cluster_fault, SOURCE_CHANGED, WORKER_DIED, die_with_parent,
                                    disk_full_message, is_disk_full, is_worker_death, oom_kill_count,
                                    storage_fault, worker_death_cause)
from avpipe.pipeline.fingerprint import Fingerprint, upstream_names
from avpipe.pipeline.given import Given
from avpipe.pipeline.index import FailureRecord, ShardRecord
from avpipe.pipeline.lock import CacheLock
from avpipe.pipeline.plan import Plan, make_plan, preflight
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.shard_writer import ShardWriter
from avpipe.pipeline.stage import Runtime, Stage, StageResult, VideoRef
from avpipe.pipeline.loky_memory import keep_worker_memory
from avpipe.pipeline.stage_memo import loaded_stage, release_stages
from avpipe.pipeline.store import Cache
from avpipe.pipeline.threads import apply_torch_threads, default_num_threads
from avpipe.pipeline.types import PROBE
from avpipe.pipeline.worker_device import device_resources, worker_device
from avpipe.provenance import entry_provenance


# -- worker side ------------------------------------------------------------------------------
@dataclass
class Task:
    """Everything a worker needs, by value (picklable): no index, no driver state."""

    task_id: int
    stage_cls: type[Stage]
    config: Any
    runtime: Runtime
    fingerprint: Fingerprint
    root: str
    videos: list[tuple[VideoRef, dict[str, ShardEntry]]]
    driver_pid: int | None = None  # set for local pool workers: they exit when the driver dies
    stderr_path: str | None = None  # isolation runs: the worker's stderr goes here (cause of death)
    auto_threads: bool = False  # Dask: threads from the worker's own cores, not the driver's


@dataclass
class TaskResult:
    task_id: int
    shard: ShardRecord | None
    failures: list[FailureRecord]
    seconds: float


def _failure(task: Task, video: VideoRef, exc: BaseException, tb: str | None = None, *,
             error_type: str | None = None, message: str | None = None,
             transient: bool = False) -> FailureRecord:
    if error_type is None and is_disk_full(exc):  # the machine's fault, not the video's
        error_type, message, transient = DISK_FULL, disk_full_message(task.root), True
    return FailureRecord(task.fingerprint.stage, task.fingerprint.value, video.content_id, video.key,
                         error_type or type(exc).__name__, message or str(exc) or type(exc).__name__,
                         tb if tb is not None else "".join(traceback.format_exception(exc)), time.time(),
                         transient)


def _check_result(stage: Stage, res: Any, n_frames: int | None) -> None:
    if not isinstance(res, StageResult):
        raise TypeError(f"{stage.name}.compute returned {type(res).__name__}, not StageResult")
    if stage.per_frame:
        rows = n_rows(res.data)  # a RowChunks declares its rows; its generator is checked as it is written
        if n_frames is not None and rows != n_frames:
            raise ValueError(f"per-frame stage {stage.name!r} returned {rows} rows but probe found "
                             f"{n_frames} frames (every per-frame stage must write one row per frame)")
        if res.mask is not None and np.asarray(res.mask).shape != (rows,):
            raise ValueError(f"{stage.name!r}: mask shape {np.asarray(res.mask).shape} != ({rows},)")


@contextlib.contextmanager
def _stderr_to(path: str | None) -> Iterator[None]:
    """Send this process's stderr (fd 2, native libraries included) to ``path`` for the block,
    with faulthandler on it, so the driver can read why a worker died. No-op without a path."""
    if path is None:
        yield
        return
    import faulthandler

    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab", buffering=0) as fh:
        os.dup2(fh.fileno(), 2)
        faulthandler.enable(file=fh)
        try:
            yield
        finally:
            sys.stderr.flush()
            faulthandler.disable()
            os.dup2(saved, 2)
            os.close(saved)


def run_task(task: Task) -> TaskResult:
    """Compute one task (a few videos of one stage) and write one shard. Never raises for a
    per-video problem: failures come back as records for the driver to commit."""
    if task.driver_pid is not None:
        die_with_parent(task.driver_pid)
        keep_worker_memory()
    if task.auto_threads:
        n = dask_worker_threads()
        if n is not None:
            task = dataclasses.replace(task, runtime=dataclasses.replace(task.runtime, num_threads=n))
    with _stderr_to(task.stderr_path):
        return _run_task(task)


def _on_this_worker(runtime: Runtime) -> Runtime:
    """``runtime`` with ``--device`` read on the process that runs the task (a per-GPU worker
    maps ``cuda:N`` to its one visible device; see :mod:`avpipe.pipeline.worker_device`)."""
    device = worker_device(runtime.device)
    return runtime if device == runtime.device else dataclasses.replace(runtime, device=device)


class _StorageFailed(Exception):
    """Writing the task's shard failed because of the cache (disk full, HDF5/filesystem error)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message


def _add_result(writer: ShardWriter, task: Task, video: VideoRef, res: StageResult) -> None:
    """Write one result; a failure of the cache (not of the video's data) is a _StorageFailed."""
    try:
        writer.add(video.content_id, res)
    except Exception as e:
        fault = storage_fault(e, task.root)
        if fault is None:
            raise
        raise _StorageFailed(*fault) from e


def _run_task(task: Task) -> TaskResult:
    t0 = time.perf_counter()
    failures: list[FailureRecord] = []
    try:
        # threads are set here and before each compute, for every stage and every execution mode
        # (in process, loky, Dask): stages never set them (torch imported by the load is covered
        # by the per-video call below)
        apply_torch_threads(task.runtime.num_threads)
        runtime = _on_this_worker(task.runtime)
        stage = loaded_stage(task.stage_cls, task.config, runtime, task.fingerprint.value)
    except Exception as e:  # model load failed: every video of the task fails with that reason
        tb = traceback.format_exc()
        return TaskResult(task.task_id, None, [_failure(task, v, e, tb) for v, _ in task.videos],
                          time.perf_counter() - t0)
    fp = task.fingerprint
    writer = ShardWriter(task.root, fp.stage, fp.value, entry_provenance(fp))
    byid = {v.content_id: v for v, _ in task.videos}
    broken: _StorageFailed | None = None
    for video, inputs in task.videos:
        if broken is not None:  # the cache cannot be written: do not compute what cannot be kept
            failures.append(_failure(task, video, broken, error_type=broken.error_type,
                                     message=broken.message, transient=True))
            continue
        try:
            n_frames: int | None = None
            if PROBE in inputs:
                ts = np.asarray(inputs[PROBE].data, dtype=np.float64)
                n_frames = int(ts.shape[0])
                for e in inputs.values():
                    e.frame_times = ts
            apply_torch_threads(task.runtime.num_threads)
            res = stage.compute(video, inputs)
            if stage.name == PROBE:
                n_frames = int(res.attrs.get("n_frames", n_rows(res.data)))
            _check_result(stage, res, n_frames)
            _add_result(writer, task, video, res)  # written now; the result is dropped below
            changed = source_changed(video.path, video.identity) if video.path is not None else None
            if changed:  # what was decoded may not be the bytes the content id names
                writer.discard(video.content_id)
                failures.append(_failure(task, video, RuntimeError(changed), error_type=SOURCE_CHANGED,
                                         message=f"{changed}: its {fp.stage} result was discarded; the "
                                                 "next run hashes it again", transient=True))
        except _StorageFailed as e:
            # close the HDF5 file now (a half-written file on a full disk must not be touched
            # again: that is how h5py ends in a segfault), and fail what it held
            broken = e
            tb = traceback.format_exc()
            lost = [c for c in writer.rows if c != video.content_id]
            writer.abort()
            failures.extend(_failure(task, byid[c], e, tb, error_type=e.error_type, message=e.message,
                                     transient=True) for c in [*lost, video.content_id])
            writer.rows.clear()
        except Exception as e:
            failures.append(_failure(task, video, e))
        finally:
            res = None  # noqa: F841 - release this video's result before the next one
            for e in inputs.values():
                e.release()  # and the inputs it read
    try:
        shard = writer.commit()
    except Exception as e:  # disk full, the cache folder vanished: the cache's fault, retried
        tb = traceback.format_exc()
        writer.abort()
        error_type, message = storage_fault(e, task.root) or (CACHE_WRITE, f"writing the cache failed "
                                                                          f"({type(e).__name__}: {e})")
        failures.extend(_failure(task, byid[cid], e, tb, error_type=error_type, message=message,
                                 transient=True) for cid in writer.rows)
        shard = None
    return TaskResult(task.task_id, shard, failures, time.perf_counter() - t0)


# -- driver side ------------------------------------------------------------------------------
@dataclass
class StageSummary:
    name: str
    fingerprint: str | None
    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    skipped: int = 0  # upstream failed/missing for that video
    failed_before: int = 0  # earlier failures not retried
    forced: bool = False
    unavailable: str | None = None
    seconds: float = 0.0


@dataclass
class RunSummary:
    stages: list[StageSummary]
    n_files: int
    n_videos: int
    hashed: int
    planning_s: float
    total_s: float = 0.0
    dropped_entries: int = 0
    failures: list[FailureRecord] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, key, reason)
    cluster_lost: str | None = None  # why the Dask cluster went away mid-run (later stages not run)

    @property
    def ok(self) -> bool:
        return self.cluster_lost is None and all(s.failed == 0 and s.failed_before == 0 and s.skipped == 0 and s.unavailable is None
                   for s in self.stages)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def render(self) -> str:
        lines = [f"{self.n_files} files, {self.n_videos} distinct videos "
                 f"({self.hashed} hashed); planned in {self.planning_s:.3f} s, total {self.total_s:.2f} s"]
        if self.dropped_entries:
            lines.append(f"  {self.dropped_entries} entries dropped: their shards changed or vanished "
                         "on disk (recomputed)")
        w = max([len(s.name) for s in self.stages] + [5])
        lines.append(f"  {'stage':<{w}}  {'cached':>6} {'computed':>8} {'failed':>6} {'skipped':>7} "
                     f"{'not-retried':>11} {'wall s':>7}  fingerprint")
        for s in self.stages:
            fp = (s.fingerprint or "-")[:16]
            lines.append(f"  {s.name:<{w}}  {s.cached:>6} {s.computed:>8} {s.failed:>6} {s.skipped:>7} "
                         f"{s.failed_before:>11} {s.seconds:>7.2f}  {fp}" + ("  (forced)" if s.forced else ""))
            if s.unavailable:
                lines.append(f"    {s.name} cannot run: {s.unavailable}")
        full = [f for f in self.failures if f.error_type == DISK_FULL]
        lost = [f for f in self.failures if f.error_type == CLUSTER_LOST]
        for f in self.failures:
            if f.error_type in (DISK_FULL, CLUSTER_LOST):
                continue
            msg = f.message.splitlines()[0] if f.message else ""
            lines.append(f"  FAILED {f.stage} {safe_name(f.key)}: {f.error_type}: {safe_text(msg)}")
        if full:  # one line, not one per video: the disk is the problem, not the videos
            lines.append(f"  DISK FULL: {len(full)} (stage, video) results could not be stored "
                         f"({safe_text(full[-1].message)}); free some space: the next run retries them")
        if self.cluster_lost is not None:  # one line: the cluster is the problem, not the videos
            lines.append(f"  CLUSTER LOST: the Dask cluster went away ({safe_text(self.cluster_lost)}); "
                         f"{len(lost)} (stage, video) results were not computed and later stages did "
                         "not run; the next run retries them (no --retry-failed needed)")
        if self.skipped:
            lines.append(f"  {len(self.skipped)} (stage, video) skipped because an upstream stage failed "
                         "or is missing for that video")
        nb = sum(s.failed_before for s in self.stages)
        if nb:
            lines.append(f"  {nb} earlier failures were not retried (use --retry-failed, "
                         "or change the stage's config)")
        lines.append("all done" if self.ok else "finished with failures (exit status 1)")
        return "\n".join(lines)


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    n = max(1, int(n))
    return [items[i:i + n] for i in range(0, len(items), n)]


TASKS_PER_WORKER = 2  # a few tasks per worker, so a slow task does not leave the others idle


def task_size(n_videos: int, jobs: int, videos_per_task: int) -> int:
    """Videos per task: enough tasks that each of ``jobs`` workers gets about
    ``TASKS_PER_WORKER`` of them, never more than the stage's ``videos_per_task``. Why: sizing
    by ``videos_per_task`` alone made a batch of <= 8 videos one task, and ``--jobs 2`` used one
    core. ``jobs`` is the executor's :meth:`Executor.slots`: the pool size locally, the cluster's
    worker threads now with Dask. With one slot tasks stay at ``videos_per_task``: fewer, larger
    shards."""
    cap = max(1, int(videos_per_task))
    if jobs <= 1 or n_videos <= 0:
        return cap
    return max(1, min(cap, math.ceil(n_videos / (jobs * TASKS_PER_WORKER))))


def dask_worker_threads() -> int | None:
    """Torch threads for a task running on a Dask worker: *that* machine's free cores shared
    among the worker's task threads; None outside a Dask worker. Why: the driver's cores and load
    say nothing about a worker on another node."""
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        return None
    return default_num_threads(int(getattr(w.state, "nthreads", None) or getattr(w, "nthreads", 1) or 1))


class Executor:
    """Runs tasks locally (``jobs=1`` in-process, else a loky pool) or on a Dask cluster.
    Results come back unordered.

    Dask tasks go straight to the ``distributed`` client (not through joblib's Dask backend): that
    backend runs everything *in the driver* when the cluster has one worker thread, hides the
    cluster's size, and wraps a lost scheduler in errors that look like a task's."""

    def __init__(self, jobs: int = 1, backend: str = "loky", scheduler: str | None = None,
                 scheduler_file: str | None = None) -> None:
        if backend not in ("loky", "dask"):
            raise ValueError(f"unknown backend {backend!r}: use loky or dask")
        self.jobs, self.backend, self.scheduler, self.scheduler_file = jobs, backend, scheduler, scheduler_file
        self._client: Any = None
        self.auto_threads = False  # Dask: each task takes its worker's threads (no --num-threads given)
        self._resources: dict[str, float] | None = None  # Dask: what every task needs (see route_device)

    @property
    def local_pool(self) -> bool:
        """Tasks run in worker processes this driver started (and must not outlive it)."""
        return self.backend == "loky" and self.jobs != 1

    def _workers(self) -> dict[str, dict[str, Any]] | None:
        """The scheduler's workers now (None: unreachable; the tasks will say so)."""
        try:
            return self._client.scheduler_info(n_workers=-1).get("workers", {})
        except TypeError:  # older distributed: no n_workers argument
            return self._client.scheduler_info().get("workers", {})
        except Exception:
            return None

    def slots(self) -> int:
        """How many tasks can run at once: ``jobs`` locally; with Dask the cluster's worker threads
        now (asked each stage, so workers that joined since count), or ``jobs`` if larger. Tasks
        restricted to one GPU's workers (``--device cuda:N``) count only those workers' threads."""
        if self.backend != "dask" or self._client is None:
            return self.jobs
        workers = self._workers()
        if workers is None:
            return max(1, self.jobs)
        if self._resources:
            workers = {a: w for a, w in workers.items()
                       if all(r in (w.get("resources") or {}) for r in self._resources)}
        return max(self.jobs, sum(int(w.get("nthreads", 1)) for w in workers.values()), 1)

    def route_device(self, device: str) -> None:
        """With Dask, send every task where ``--device`` can run: an explicit ``cuda:N`` on a
        cluster of per-GPU workers goes to GPU N's workers only; raises
        :class:`~avpipe.pipeline.worker_device.DeviceNotInCluster` (a usage error) if none owns it.
        Other devices run anywhere and are resolved on the worker."""
        if self.backend == "dask" and self._client is not None:
            self._resources = device_resources(device, self._workers() or {})

    def __enter__(self) -> "Executor":
        if self.backend == "dask":
            from dask.distributed import Client

            if self.scheduler_file:
                self._client = Client(scheduler_file=self.scheduler_file)
            elif self.scheduler:
                self._client = Client(self.scheduler)
            else:
                self._client = Client(processes=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # a lost scheduler must not hide the summary
                self._client.close(timeout=5)
            self._client = None

    def map(self, tasks: list[Task]) -> Iterator[TaskResult]:
        if not tasks:
            return iter(())
        if self.backend == "dask":
            return self._map_dask(tasks)
        from joblib import Parallel, delayed

        if self.jobs == 1:
            return (run_task(t) for t in tasks)
        import warnings

        # loky restarts a worker whose memory grew (a model was loaded into it) and warns that "a
        # worker stopped"; the task is resubmitted, so the warning only alarms users.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                category=UserWarning)
        return iter(Parallel(n_jobs=self.jobs, backend="loky", return_as="generator_unordered")(
            delayed(run_task)(t) for t in tasks))

    def _map_dask(self, tasks: list[Task]) -> Iterator[TaskResult]:
        import uuid

        from distributed import as_completed

        assert self._client is not None, "use the Executor as a context manager"
        run = uuid.uuid4().hex[:8]
        futures = [self._client.submit(run_task, t, pure=False, resources=self._resources,
                                       key=f"avpipe-{t.fingerprint.stage}-{run}-{t.task_id}") for t in tasks]

        def gen() -> Iterator[TaskResult]:
            try:
                for fut in as_completed(futures):
                    yield fut.result()  # run_task never raises for a video: an error here is the cluster's
            finally:
                for fut in futures:
                    with contextlib.suppress(Exception):
                        fut.release()
        return gen()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return _NoBar()  # and tqdm is not even imported: a warm run stays cheap
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video", file=sys.stderr, disable=not enabled or total == 0,
                dynamic_ncols=True, leave=True)


class _RunState:
    """What ``execute`` knows across stages: what is done now, where it lives, why not."""

    def __init__(self, cache: Cache, plan: Plan, summary: RunSummary) -> None:
        self.cache, self.plan, self.summary = cache, plan, summary
        self.by_cid = plan.by_cid()
        self.done_now: dict[str, set[str]] = {}
        self.shards_now: dict[str, dict[str, str]] = {}
        self.why_missing: dict[tuple[str, str], str] = {}  # (stage, cid) -> reason it has no entry


def _start_stage(state: _RunState, name: str) -> StageSummary:
    """The stage's summary row; earlier failures and unavailability recorded as reasons."""
    sp = state.plan.stages[name]
    ss = StageSummary(name, sp.fingerprint.value if sp.fingerprint else None, total=len(state.plan.videos),
                      cached=len(sp.done), failed_before=len(sp.failed_before), forced=sp.forced,
                      unavailable=sp.unavailable)
    state.summary.stages.append(ss)
    for cid in sp.failed_before:
        state.why_missing[(name, cid)] = f"{name} failed in an earlier run"
    if sp.unavailable or sp.fingerprint is None:
        state.done_now[name] = set()
        for cid in state.by_cid:
            state.why_missing[(name, cid)] = f"{name} unavailable"
    elif sp.given is not None and sp.given.source is None:
        for cid in set(state.by_cid) - sp.done:
            state.why_missing[(name, cid)] = f"{name} has no entry in the given {sp.fingerprint.value[:16]}"
    return ss


def _ready_videos(state: _RunState, name: str, ss: StageSummary) -> list[str]:
    """The stage's todo minus videos an upstream stage has no entry for (those are skipped)."""
    sp = state.plan.stages[name]
    ups = upstream_names(sp.stage)
    ready: list[str] = []
    for cid in sp.todo:
        lacking = [u for u in ups if cid not in state.done_now.get(u, set())]
        if lacking:
            reason = state.why_missing.get((lacking[0], cid), f"{lacking[0]} has no entry")
            state.summary.skipped.append((name, state.by_cid[cid].key, reason))
            state.why_missing[(name, cid)] = f"skipped: {reason}"
            ss.skipped += 1
        else:
            ready.append(cid)
    return ready


def _make_tasks(state: _RunState, name: str, ready: list[str], executor: "Executor") -> list[Task]:
    """Cut ``ready`` into tasks of :func:`task_size`, each carrying its inputs' shard paths."""
    sp = state.plan.stages[name]
    ups = upstream_names(sp.stage)
    tasks: list[Task] = []
    size = task_size(len(ready), executor.slots(), sp.stage.videos_per_task)
    for i, chunk in enumerate(_chunks(ready, size)):
        vids = []
        for cid in chunk:
            v = state.by_cid[cid]
            inputs = {u: ShardEntry(state.cache.root / state.shards_now[u][cid], stage=u,
                                    fingerprint=state.plan.stages[u].fingerprint.value,  # type: ignore[union-attr]
                                    content_id=cid, key=v.key) for u in ups}
            vids.append((VideoRef(v.key, cid, v.path, v.identity), inputs))
        tasks.append(Task(i, type(sp.stage), sp.stage.config, sp.stage.runtime, sp.fingerprint,  # type: ignore[arg-type]
                          str(state.cache.root), vids,
                          driver_pid=os.getpid() if executor.local_pool else None,
                          auto_threads=executor.backend == "dask" and executor.auto_threads))
    return tasks


class _StageCommitter:
    """Commits each task result of one stage as it arrives and keeps the stage's counts."""

    def __init__(self, state: _RunState, name: str, ss: StageSummary, bar: Any) -> None:
        self.state, self.name, self.ss, self.bar = state, name, ss, bar
        self.sp = state.plan.stages[name]
        self.ok_cids: set[str] = set()
        self.failed: dict[str, FailureRecord] = {}  # content id -> its latest failure this run

    def result(self, res: TaskResult) -> None:
        fp = self.sp.fingerprint.value  # type: ignore[union-attr]
        self.state.cache.index.commit_task(fp, self.name, res.shard, res.failures, self.sp.invalidate)
        if res.shard:
            new = set(res.shard.rows) - self.ok_cids
            self.ok_cids |= new
            self.ss.computed += len(new)
            for cid in new & set(self.failed):  # a retried task succeeded this time
                self._forget(self.failed.pop(cid))
        self.failures(res.failures, commit=False)
        self.bar.update(len(res.failures) + (len(res.shard.rows) if res.shard else 0))

    def _forget(self, f: FailureRecord) -> None:
        self.state.summary.failures.remove(f)
        self.ss.failed -= 1

    def failures(self, fails: list[FailureRecord], *, commit: bool = True) -> None:
        """Record failures; a video retried within this run (a dead worker's task) keeps only its
        latest failure, so every (stage, video) is counted and printed once."""
        if commit:
            fp = self.sp.fingerprint.value  # type: ignore[union-attr]
            self.state.cache.index.commit_task(fp, self.name, None, fails, ())
        for f in fails:
            why = "worker died" if f.error_type == WORKER_DIED else f.error_type
            self.state.why_missing[(self.name, f.content_id)] = f"{self.name} failed ({why})"
            if f.content_id in self.failed:
                self._forget(self.failed.pop(f.content_id))
            self.failed[f.content_id] = f
            self.ss.failed += 1
            self.state.summary.failures.append(f)


def _run_round(tasks: list[Task], executor: "Executor",
               commit: _StageCommitter) -> tuple[list[Task], BaseException | None]:
    """Run ``tasks``, committing each result; returns the tasks that never came back (a worker
    died, the pool broke) and the error that ended the round."""
    outstanding = {t.task_id: t for t in tasks}
    try:
        results = executor.map(tasks)
    except Exception as e:
        return list(outstanding.values()), e
    while True:
        try:
            res = next(results)
        except StopIteration:
            return [], None
        except Exception as e:  # only the pool's errors: an index write error is not a worker's
            return list(outstanding.values()), e
        commit.result(res)
        outstanding.pop(res.task_id, None)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_isolated(task: Task, video: tuple[VideoRef, dict[str, ShardEntry]], executor: "Executor",
                  commit: _StageCommitter) -> None:
    """Run one video alone (its worker's stderr captured); if it kills its worker again, record
    that video — and only it — with the cause read from the exit code and the stderr."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="avpipe-isolate-") as tmp:
        err_path = os.path.join(tmp, "stderr") if executor.local_pool else None
        one = Task(task.task_id, task.stage_cls, task.config, task.runtime, task.fingerprint, task.root,
                   [video], driver_pid=task.driver_pid, stderr_path=err_path, auto_threads=task.auto_threads)
        oom_before = oom_kill_count()
        left, exc = _run_round([one], executor, commit)
        err = ""
        if err_path and os.path.exists(err_path):
            with open(err_path, errors="replace") as fh:
                err = fh.read()
            if err:
                sys.stderr.write(err)  # the worker's own words reach the user as before
    if not left or exc is None or _cluster_lost(left, exc, commit):
        return
    tb = "".join(traceback.format_exception(exc)) + ("\n-- worker stderr --\n" + err[-4000:] if err else "")
    if is_worker_death(exc):
        cause = worker_death_cause(exc, stderr_tail=err[-4000:], oom_before=oom_before, cache_root=task.root)
        commit.failures([_failure(one, video[0], exc, tb, error_type=WORKER_DIED, message=cause,
                                  transient=True)])
    else:
        commit.failures([_failure(one, video[0], exc, tb)])


def _cluster_lost(left: list[Task], exc: BaseException | None, commit: _StageCommitter) -> bool:
    """If the round ended because the cluster went away (or had already), record the videos it
    did not finish as transient ``ClusterLost`` failures and note why in the summary. True then.

    Why: a lost scheduler says nothing about the videos; stored as their own failure they waited
    for ``--retry-failed``. The run stops here (later stages would only wait for the same dead
    scheduler) and exits non-zero with one line saying the cluster went away."""
    summary = commit.state.summary
    if not left or (summary.cluster_lost is None and (exc is None or not is_cluster_fault(exc))):
        return False
    if summary.cluster_lost is None:
        summary.cluster_lost = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    why = summary.cluster_lost
    tb = "".join(traceback.format_exception(exc)) if exc is not None else why
    commit.failures([_failure(t, v, RuntimeError(why), tb, error_type=CLUSTER_LOST,
                              message=f"the Dask cluster went away ({why}); retried by the next run",
                              transient=True)
                     for t in left for v, _ in t.videos])
    return True


def _run_stage_tasks(tasks: list[Task], executor: "Executor", commit: _StageCommitter) -> None:
    """Run a stage's tasks so that one dead worker costs at most the videos that kill workers.

    1. every task through the pool; 2. if a worker died, the tasks that never came back run
    once more (the death may have been another task's, or a passing memory squeeze); 3. if a
    worker dies again, each of their videos runs alone, so a video that kills its worker every
    time is recorded alone with the real cause, and the others complete.
    """
    left, exc = _run_round(tasks, executor, commit)
    if _cluster_lost(left, exc, commit):
        return
    if left and exc is not None and is_worker_death(exc):
        n = sum(len(t.videos) for t in left)
        _say(f"{commit.name}: {worker_death_cause(exc)}; retrying the {n} videos of its unfinished tasks")
        left, exc = _run_round(left, executor, commit)
        if _cluster_lost(left, exc, commit):
            return
        if left and exc is not None and is_worker_death(exc):
            n = sum(len(t.videos) for t in left)
            _say(f"{commit.name}: a worker died again; running those {n} videos one at a time")
            for t in left:
                for i, video in enumerate(t.videos):
                    if commit.state.summary.cluster_lost is not None:  # no cluster to isolate on
                        _cluster_lost([Task(t.task_id, t.stage_cls, t.config, t.runtime, t.fingerprint,
                                            t.root, t.videos[i:])], None, commit)
                        break
                    _run_isolated(t, video, executor, commit)
            return
    if left and exc is not None:  # not a worker death (e.g. the task could not be pickled)
        tb = "".join(traceback.format_exception(exc))
        commit.failures([_failure(t, v, RuntimeError(f"worker process failed: {type(exc).__name__}: {exc}"), tb)
                         for t in left for v, _ in t.videos])


def execute(cache: Cache, plan: Plan, executor: Executor, *, progress: bool = True) -> RunSummary:
    """Run every stage of ``plan`` (in order), committing each task's result as it arrives."""
    summary = RunSummary([], len(plan.discovered), len(plan.videos), plan.hashed, plan.seconds,
                         dropped_entries=plan.dropped_entries)
    state = _RunState(cache, plan, summary)
    for name in plan.order:
        ss = _start_stage(state, name)
        sp = plan.stages[name]
        if sp.unavailable or sp.fingerprint is None:
            continue
        if summary.cluster_lost is not None:  # nothing can run without the cluster: stop here
            break
        t0 = time.perf_counter()
        ready = _ready_videos(state, name, ss)
        bar = _progress(len(ready), name, progress)
        commit = _StageCommitter(state, name, ss, bar)
        try:
            _run_stage_tasks(_make_tasks(state, name, ready, executor), executor, commit)
        finally:
            bar.close()
        state.done_now[name] = (sp.done | commit.ok_cids) if not sp.forced else commit.ok_cids
        state.shards_now[name] = cache.index.entry_shards(sp.fingerprint.value)
        ss.seconds = time.perf_counter() - t0
    return summary


def run_extract(cache_root: str | Path, videos_root: str | Path, config: PipelineConfig | None = None, *,
                stages: list[str] | None = None, only: str | None = None, force: bool = False,
                retry_failed: bool | Collection[str] = False, jobs: int = 1, backend: str = "loky",
                scheduler: str | None = None, runtime: Runtime | None = None,
                progress: bool = True, say: Any = None, scheduler_file: str | None = None,
                auto_threads: bool | None = None, given: Mapping[str, Given] | None = None) -> RunSummary:
    """The whole ``extract`` command as a function: lock, plan, execute, summarise.

    Raises :class:`avpipe.pipeline.plan.PlanError` for usage errors (unknown stage, bad config).
    ``auto_threads`` (default: no ``runtime`` given): on Dask, each task's torch threads follow
    the cores of the worker that runs it. ``given``: stages whose entries are pinned for this run
    (:class:`~avpipe.pipeline.given.Given`; e.g. ``ingest-crops`` gives ``faces`` from a crop tree).
    """
    t0 = time.perf_counter()
    executor = Executor(jobs, backend, scheduler, scheduler_file)
    executor.auto_threads = runtime is None if auto_threads is None else auto_threads
    if runtime is None:  # threads follow the free cores shared among the workers
        runtime = Runtime(num_threads=default_num_threads(jobs))
    root = Path(cache_root).expanduser().absolute()
    preflight(config, stages, only, force, runtime, given)  # usage errors and missing weights: nothing created
    threads_before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    with CacheLock(root, say=say):
        with Cache(root, create=True) as cache:
            _warn_lost_index(cache, say or _say)
            plan = make_plan(cache, videos_root, config, stages=stages, only=only, force=force,
                             retry_failed=retry_failed, runtime=runtime, given=given)
            try:
                if plan.n_todo == 0:
                    summary = execute(cache, plan, Executor(1), progress=False)
                else:
                    with executor:
                        executor.route_device(runtime.device)
                        summary = execute(cache, plan, executor, progress=progress)
            finally:
                release_stages()  # models loaded in this process (jobs=1) are not kept after the run
                apply_torch_threads(threads_before)  # nor the workers' thread count (in-process runs)
    summary.total_s = time.perf_counter() - t0
    return summary


def _warn_lost_index(cache: Cache, say: Any) -> None:
    """An index with no entries beside shard files was emptied or replaced: say so once (the run
    recomputes what it needs; ``cache rebuild-index`` would have recovered it). Only checked when
    the index is empty, so a normal run pays nothing."""
    if cache.index.db.execute("SELECT 1 FROM entries LIMIT 1").fetchone():
        return
    from avpipe.pipeline.maintenance import index_problem

    why = index_problem(cache)
    if why:
        say(f"warning: {why}. This run recomputes what it needs; stop it and run `avpipe cache "
            "rebuild-index` to keep the earlier work instead")


def default_cache_root() -> Path:
    """``$AVPIPE_CACHE`` or ``./cache``."""
    return Path(os.environ.get("AVPIPE_CACHE") or "cache")


