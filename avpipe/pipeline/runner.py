"""Execution: run a :class:`~avpipe.pipeline.plan.Plan` stage by stage, commit as results arrive.

* Stages run in topological order; within a stage the videos to compute are cut into tasks of
  ``Stage.videos_per_task`` so a worker loads its model once per task (``ensure_loaded``).
* joblib is the one parallel API: ``jobs=1`` runs tasks in this process (no pool); otherwise a
  loky process pool, or — ``backend="dask"`` — a Dask cluster through joblib's Dask backend. The
  same :func:`run_task` runs everywhere and returns what it wrote; only this driver touches the
  index, one transaction per task as each result arrives, so a crash loses only in-flight work.
* Any exception from a stage for one video is recorded (type, message, traceback) and that video
  is skipped by the stage's dependents (counted as *skipped*, not as their own failure); the rest
  of the batch completes. A per-frame stage whose row count differs from probe's ``n_frames``
  fails for that video.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import avpipe
from avpipe.display import safe_name, safe_text
from avpipe.pipeline.entry import ShardEntry
from avpipe.pipeline.fingerprint import Fingerprint, upstream_names
from avpipe.pipeline.index import FailureRecord, ShardRecord
from avpipe.pipeline.lock import CacheLock
from avpipe.pipeline.plan import Plan, make_plan
from avpipe.pipeline.settings import PipelineConfig
from avpipe.pipeline.stage import Runtime, Stage, StageResult, VideoRef
from avpipe.pipeline.store import Cache, write_shard


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


@dataclass
class TaskResult:
    task_id: int
    shard: ShardRecord | None
    failures: list[FailureRecord]
    seconds: float


def _failure(task: Task, video: VideoRef, exc: BaseException, tb: str | None = None) -> FailureRecord:
    return FailureRecord(task.fingerprint.stage, task.fingerprint.value, video.content_id, video.key,
                         type(exc).__name__, str(exc) or type(exc).__name__,
                         tb if tb is not None else "".join(traceback.format_exception(exc)), time.time())


def _check_result(stage: Stage, res: Any, n_frames: int | None) -> None:
    if not isinstance(res, StageResult):
        raise TypeError(f"{stage.name}.compute returned {type(res).__name__}, not StageResult")
    data = np.asarray(res.data)
    if stage.per_frame:
        rows = int(data.shape[0]) if data.ndim else 0
        if n_frames is not None and rows != n_frames:
            raise ValueError(f"per-frame stage {stage.name!r} returned {rows} rows but probe found "
                             f"{n_frames} frames (every per-frame stage must write one row per frame)")
        if res.mask is not None and np.asarray(res.mask).shape != (rows,):
            raise ValueError(f"{stage.name!r}: mask shape {np.asarray(res.mask).shape} != ({rows},)")


def run_task(task: Task) -> TaskResult:
    """Compute one task (a few videos of one stage) and write one shard. Never raises for a
    per-video problem: failures come back as records for the driver to commit."""
    t0 = time.perf_counter()
    stage = task.stage_cls(task.config, task.runtime)
    ok: list[tuple[str, StageResult]] = []
    failures: list[FailureRecord] = []
    try:
        stage.ensure_loaded()
    except Exception as e:  # model load failed: every video of the task fails with that reason
        tb = traceback.format_exc()
        return TaskResult(task.task_id, None, [_failure(task, v, e, tb) for v, _ in task.videos],
                          time.perf_counter() - t0)
    for video, inputs in task.videos:
        try:
            n_frames: int | None = None
            if "probe" in inputs:
                ts = np.asarray(inputs["probe"].data, dtype=np.float64)
                n_frames = int(ts.shape[0])
                for e in inputs.values():
                    e.timestamps = ts
            res = stage.compute(video, inputs)
            if stage.name == "probe":
                n_frames = int(res.attrs.get("n_frames", len(res.data)))
            _check_result(stage, res, n_frames)
            ok.append((video.content_id, res))
        except Exception as e:
            failures.append(_failure(task, video, e))
    shard = None
    if ok:
        fp = task.fingerprint
        prov = {"stage": fp.stage, "version": fp.version, "fingerprint": fp.value,
                "config_json": fp.config_json, "weights_id": fp.weights_id or "",
                "upstream_json": fp.upstream_json(), "avpipe_version": avpipe.__version__}
        try:
            shard = write_shard(task.root, fp.stage, fp.value, ok, prov)
        except Exception as e:  # disk full, unwritable cache: each video of the shard fails
            tb = traceback.format_exc()
            byid = {v.content_id: v for v, _ in task.videos}
            failures.extend(_failure(task, byid[cid], e, tb) for cid, _ in ok)
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

    @property
    def ok(self) -> bool:
        return all(s.failed == 0 and s.failed_before == 0 and s.skipped == 0 and s.unavailable is None
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
                     f"{'not-retried':>11}  fingerprint")
        for s in self.stages:
            fp = (s.fingerprint or "-")[:16]
            lines.append(f"  {s.name:<{w}}  {s.cached:>6} {s.computed:>8} {s.failed:>6} {s.skipped:>7} "
                         f"{s.failed_before:>11}  {fp}" + ("  (forced)" if s.forced else ""))
            if s.unavailable:
                lines.append(f"    {s.name} cannot run: {s.unavailable}")
        for f in self.failures:
            msg = f.message.splitlines()[0] if f.message else ""
            lines.append(f"  FAILED {f.stage} {safe_name(f.key)}: {f.error_type}: {safe_text(msg)}")
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


class Executor:
    """Runs tasks through joblib; ``jobs=1`` in-process. Results come back unordered."""

    def __init__(self, jobs: int = 1, backend: str = "loky", scheduler: str | None = None) -> None:
        if backend not in ("loky", "dask"):
            raise ValueError(f"unknown backend {backend!r}: use loky or dask")
        self.jobs, self.backend, self.scheduler = jobs, backend, scheduler
        self._client: Any = None

    def __enter__(self) -> "Executor":
        if self.backend == "dask":
            from dask.distributed import Client

            self._client = Client(self.scheduler) if self.scheduler else Client(processes=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def map(self, tasks: list[Task]) -> Iterator[TaskResult]:
        if not tasks:
            return iter(())
        from joblib import Parallel, delayed, parallel_config

        if self.backend == "dask":
            def gen() -> Iterator[TaskResult]:
                with parallel_config(backend="dask", n_jobs=self.jobs if self.jobs > 1 else -1):
                    yield from Parallel(return_as="generator_unordered")(delayed(run_task)(t) for t in tasks)
            return gen()
        if self.jobs == 1:
            return (run_task(t) for t in tasks)
        import warnings

        # loky restarts a worker whose memory grew (a model was loaded into it) and warns that "a
        # worker stopped"; the task is resubmitted, so the warning only alarms users.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                category=UserWarning)
        return iter(Parallel(n_jobs=self.jobs, backend="loky", return_as="generator_unordered")(
            delayed(run_task)(t) for t in tasks))


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


def execute(cache: Cache, plan: Plan, executor: Executor, *, progress: bool = True) -> RunSummary:
    """Run every stage of ``plan`` (in order), committing each task's result as it arrives."""
    by_cid = plan.by_cid()
    summary = RunSummary([], len(plan.discovered), len(plan.videos), plan.hashed, plan.seconds,
                         dropped_entries=plan.dropped_entries)
    done_now: dict[str, set[str]] = {}
    shards_now: dict[str, dict[str, str]] = {}
    why_missing: dict[tuple[str, str], str] = {}  # (stage, cid) -> reason it has no entry
    for name in plan.order:
        sp = plan.stages[name]
        ss = StageSummary(name, sp.fingerprint.value if sp.fingerprint else None, total=len(plan.videos),
                          cached=len(sp.done), failed_before=len(sp.failed_before), forced=sp.forced,
                          unavailable=sp.unavailable)
        summary.stages.append(ss)
        for cid in sp.failed_before:
            why_missing[(name, cid)] = f"{name} failed in an earlier run"
        if sp.unavailable or sp.fingerprint is None:
            done_now[name] = set()
            for cid in plan.by_cid():
                why_missing[(name, cid)] = f"{name} unavailable"
            continue
        t0 = time.perf_counter()
        fp = sp.fingerprint
        ups = upstream_names(sp.stage)
        ready: list[str] = []
        for cid in sp.todo:
            lacking = [u for u in ups if cid not in done_now.get(u, set())]
            if lacking:
                reason = why_missing.get((lacking[0], cid), f"{lacking[0]} has no entry")
                summary.skipped.append((name, by_cid[cid].key, reason))
                why_missing[(name, cid)] = f"skipped: {reason}"
                ss.skipped += 1
            else:
                ready.append(cid)
        tasks: list[Task] = []
        for i, chunk in enumerate(_chunks(ready, sp.stage.videos_per_task)):
            vids = []
            for cid in chunk:
                v = by_cid[cid]
                inputs = {u: ShardEntry(cache.root / shards_now[u][cid], stage=u,
                                        fingerprint=plan.stages[u].fingerprint.value,  # type: ignore[union-attr]
                                        content_id=cid, key=v.key) for u in ups}
                vids.append((VideoRef(v.key, cid, v.path), inputs))
            tasks.append(Task(i, type(sp.stage), sp.stage.config, sp.stage.runtime, fp, str(cache.root), vids))
        outstanding = {t.task_id: t for t in tasks}
        ok_cids: set[str] = set()
        bar = _progress(len(ready), name, progress)
        try:
            for res in executor.map(tasks):
                cache.index.commit_task(fp.value, name, res.shard, res.failures, sp.invalidate)
                outstanding.pop(res.task_id, None)
                if res.shard:
                    ok_cids |= set(res.shard.rows)
                    ss.computed += len(res.shard.rows)
                for f in res.failures:
                    why_missing[(name, f.content_id)] = f"{name} failed ({f.error_type})"
                ss.failed += len(res.failures)
                summary.failures.extend(res.failures)
                bar.update(len(res.failures) + (len(res.shard.rows) if res.shard else 0))
        except Exception as e:  # a worker died (segfault, OOM kill): its tasks fail, the run goes on
            tb = traceback.format_exc()
            for t in outstanding.values():
                fails = [_failure(t, v, RuntimeError(f"worker process failed: {type(e).__name__}: {e}"), tb)
                         for v, _ in t.videos]
                cache.index.commit_task(fp.value, name, None, fails, ())
                for f in fails:
                    why_missing[(name, f.content_id)] = f"{name} failed (worker died)"
                ss.failed += len(fails)
                summary.failures.extend(fails)
        finally:
            bar.close()
        done_now[name] = (sp.done | ok_cids) if not sp.forced else ok_cids
        shards_now[name] = cache.index.entry_shards(fp.value)
        ss.seconds = time.perf_counter() - t0
    return summary


def run_extract(cache_root: str | Path, videos_root: str | Path, config: PipelineConfig | None = None, *,
                stages: list[str] | None = None, only: str | None = None, force: bool = False,
                retry_failed: bool = False, jobs: int = 1, backend: str = "loky",
                scheduler: str | None = None, runtime: Runtime | None = None,
                progress: bool = True, say: Any = None) -> RunSummary:
    """The whole ``extract`` command as a function: lock, plan, execute, summarise.

    Raises :class:`avpipe.pipeline.plan.PlanError` for usage errors (unknown stage, bad config).
    """
    t0 = time.perf_counter()
    executor = Executor(jobs, backend, scheduler)
    root = Path(cache_root).expanduser().absolute()
    with CacheLock(root, say=say):
        with Cache(root, create=True) as cache:
            plan = make_plan(cache, videos_root, config, stages=stages, only=only, force=force,
                             retry_failed=retry_failed, runtime=runtime)
            if plan.n_todo == 0:
                summary = execute(cache, plan, Executor(1), progress=False)
            else:
                with executor:
                    summary = execute(cache, plan, executor, progress=progress)
    summary.total_s = time.perf_counter() - t0
    return summary


def default_cache_root() -> Path:
    """``$AVPIPE_CACHE`` or ``./cache``."""
    return Path(os.environ.get("AVPIPE_CACHE") or "cache")


