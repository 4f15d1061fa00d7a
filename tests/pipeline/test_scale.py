"""Memory and parallelism: incremental shard writes, chunked rows, task sizing, one load per worker."""
from __future__ import annotations

import os
import shutil
from collections import Counter

import h5py
import numpy as np
import pytest

from avpipe.pipeline.chunks import RowChunks, materialize
from avpipe.pipeline.plan import make_plan
from avpipe.pipeline.runner import (Executor, RunSummary, _make_tasks, _RunState, _start_stage, run_extract,
                                    task_size)
from avpipe.pipeline.shard import _write_array
from avpipe.pipeline.shard_writer import ShardWriter
from avpipe.pipeline.stage import StageResult
from avpipe.pipeline.store import Cache
from avpipe.pipeline.threads import default_num_threads


def _copy(clip_bank, dest, names):
    dest.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        shutil.copy(clip_bank / f"c{i % 4}.mp4", dest / n)
    return dest


def test_task_size_fills_every_worker():
    assert task_size(2, 2, 8) == 1  # two videos, two workers: two tasks
    assert task_size(8, 2, 8) == 2
    assert task_size(1000, 2, 8) == 8  # capped by the stage's videos_per_task
    assert task_size(5, 1, 8) == 8  # one process: tasks as large as the stage allows


def test_two_videos_and_two_jobs_make_two_tasks(tmp_path, clip_bank):
    vids = _copy(clip_bank, tmp_path / "v", ["a.mp4", "b.mp4"])
    with Cache(tmp_path / "cache", create=True) as cache:
        plan = make_plan(cache, vids, stages=["probe"])
        state = _RunState(cache, plan, RunSummary([], 0, 0, 0, 0.0))
        _start_stage(state, "probe")
        ready = sorted(plan.stages["probe"].todo)
        assert len(_make_tasks(state, "probe", ready, Executor(2))) == 2
        assert len(_make_tasks(state, "probe", ready, Executor(1))) == 1


def test_model_loads_once_per_worker_process(tmp_path, clip_bank):
    from avpipe.pipeline.config import PipelineConfig

    vids = _copy(clip_bank, tmp_path / "v", [f"v{i}.mp4" for i in range(4)])
    log = tmp_path / "load.log"
    cfg = PipelineConfig.from_dict({"stages": {"toy_load": {"log": str(log)}}})
    s = run_extract(tmp_path / "cache", vids, cfg, stages=["toy_load"], jobs=2, progress=False)
    assert s.exit_code == 0, s.render()
    lines = [tuple(ln.split()) for ln in log.read_text().splitlines()]
    assert sum(1 for st, _ in lines if st == "toy_load") == 4  # four one-video tasks
    loads = Counter(pid for st, pid in lines if st == "toy_load.load")
    assert loads and all(n == 1 for n in loads.values()), f"loads per worker pid: {dict(loads)}"
    assert os.getpid() not in {int(p) for p in loads}


def test_a_worker_holding_a_large_model_is_not_restarted(tmp_path, clip_bank):
    """A loaded model is memory loky would take for a leak (it restarts a worker that grew by
    300 MB): the pool's workers must keep theirs, so each of the two loads the model once and no
    third process ever does."""
    from avpipe.pipeline.config import PipelineConfig

    vids = _copy(clip_bank, tmp_path / "v", [f"v{i}.mp4" for i in range(4)])
    log = tmp_path / "load.log"
    cfg = PipelineConfig.from_dict({"stages": {"toy_load": {"log": str(log), "hold_mb": 400,
                                                            "compute_s": 1.2}}})
    s = run_extract(tmp_path / "cache", vids, cfg, stages=["toy_load"], jobs=2, progress=False)
    assert s.exit_code == 0, s.render()
    lines = [tuple(ln.split()) for ln in log.read_text().splitlines()]
    assert sum(1 for st, _ in lines if st == "toy_load") == 4
    loads = Counter(pid for st, pid in lines if st == "toy_load.load")
    assert len(loads) <= 2 and all(n == 1 for n in loads.values()), f"loads per worker pid: {dict(loads)}"


def test_chunked_rows_are_stored_whole_and_a_short_stream_fails_alone(tmp_path, clip_bank):
    vids = _copy(clip_bank, tmp_path / "v", ["a.mp4", "short.mp4", "c.mp4"])
    s = run_extract(tmp_path / "cache", vids, stages=["toy_chunks"], progress=False)
    fails = [f for f in s.failures if f.stage == "toy_chunks"]
    assert [f.key for f in fails] == ["short.mp4"] and "declared" in fails[0].message
    with Cache(tmp_path / "cache") as c:
        for key in ("a.mp4", "c.mp4"):
            e = c.read("toy_chunks", key)
            ts = c.read("probe", key).data
            np.testing.assert_array_equal(e.data, np.stack([ts, np.arange(len(ts))], 1).astype(np.float32))
            with h5py.File(e.shard, "r") as h5:
                assert c.resolve_video("short.mp4") not in h5  # the partial group was removed


@pytest.mark.parametrize("shape", [(1000, 64), (37, 6144), (0, 64), (5, 0)])
def test_row_chunks_give_the_same_dataset_as_the_whole_array(tmp_path, shape):
    a = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    rows = RowChunks(shape[0], shape[1:], np.float32, lambda: (a[i:i + 7] for i in range(0, len(a), 7)))
    np.testing.assert_array_equal(materialize(rows), a)
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        _write_array(h5, "whole", a)
        w = ShardWriter(tmp_path, "toy_a", "ab" * 16, {"stage": "toy_a"})
        w.add("cid", StageResult(data=rows))
        rec = w.commit()
    assert rec is not None and rec.rows == {"cid": shape[0]}
    with h5py.File(tmp_path / "x.h5", "r") as ref, h5py.File(tmp_path / rec.relpath, "r") as got:
        r, g = ref["whole"], got["cid"]["data"]
        assert (g.shape, g.dtype, g.chunks, g.compression, g.shuffle) == \
            (r.shape, r.dtype, r.chunks, r.compression, r.shuffle)
        np.testing.assert_array_equal(g[()], r[()])


def test_shard_writer_abort_and_empty_commit_leave_no_file(tmp_path):
    w = ShardWriter(tmp_path, "toy_a", "cd" * 16, {})
    assert w.commit() is None
    w = ShardWriter(tmp_path, "toy_a", "cd" * 16, {})
    w.add("x", StageResult(data=np.zeros((3, 2), np.float32)))
    assert w.tmp is not None and w.tmp.exists()
    w.abort()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_default_threads_share_the_free_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # an idle machine
    assert default_num_threads(1) == cores
    assert default_num_threads(cores * 4) == 1


def test_default_threads_leave_the_busy_cores_alone(monkeypatch):
    """Other processes keeping every core busy: one thread per worker, never an oversubscribed
    intra-op pool (2 threads on a loaded 2-core machine made faces 3.4x slower than 1)."""
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores) + 2, 1.0, 1.0))
    assert default_num_threads(1) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))  # one core taken
    assert default_num_threads(1) == max(1, cores - 1)


def test_workers_run_with_the_runtime_thread_count_and_the_caller_keeps_its_own(tmp_path, clip_bank, toy_log):
    torch = pytest.importorskip("torch")
    from avpipe.pipeline.stage import Runtime

    vids = _copy(clip_bank, tmp_path / "v", ["a.mp4"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        s = run_extract(tmp_path / "cache", vids, stages=["toy_threads"], runtime=Runtime(num_threads=1),
                        progress=False)
        assert s.exit_code == 0, s.render()
        assert [n for st, n in toy_log.lines() if st == "toy_threads"] == ["1"]
        assert torch.get_num_threads() == 3  # an in-process run gives the thread count back
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["loky", "dask"])
def test_every_execution_mode_runs_stages_with_the_runtime_thread_count(tmp_path, clip_bank, toy_log, mode):
    """Stages never set threads themselves: the runner does, in worker processes (loky) and on
    Dask workers as well as in process."""
    torch = pytest.importorskip("torch")
    from avpipe.pipeline.stage import Runtime

    vids = _copy(clip_bank, tmp_path / "v", ["a.mp4", "b.mp4"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # what an in-process Dask worker would otherwise inherit
        kw: dict = {"jobs": 2}
        if mode == "dask":
            distributed = pytest.importorskip("dask.distributed")
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                               dashboard_address=None)
            kw |= {"backend": "dask", "scheduler": cluster.scheduler_address}
        try:
            s = run_extract(tmp_path / "cache", vids, stages=["toy_threads"], runtime=Runtime(num_threads=1),
                            progress=False, **kw)
        finally:
            if mode == "dask":
                cluster.close()
        assert s.exit_code == 0, s.render()
        with Cache(tmp_path / "cache") as c:  # read back, not logged: loky reuses workers across tests
            assert [int(c.read("toy_threads", v).attrs["torch_threads"]) for v in ("a.mp4", "b.mp4")] == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_num_threads_flag_is_checked(tmp_path, clip_bank):
    from click.testing import CliRunner

    from avpipe.cli import main

    vids = _copy(clip_bank, tmp_path / "v", ["a.mp4"])
    r = CliRunner().invoke(main, ["extract", "--videos", str(vids), "--cache", str(tmp_path / "c"),
                                  "--stages", "toy_a", "--num-threads", "0", "--no-progress"])
    assert r.exit_code == 2 and "--num-threads" in r.output


def test_columns_from_one_pass_are_stored_as_the_whole_arrays_would_be(tmp_path):
    """The faces-style form: data, mask and an extra (crops) yielded together, chunk by chunk."""
    from avpipe.pipeline.chunks import dense
    from avpipe.pipeline.shard import write_result

    rng = np.random.default_rng(1)
    n = 23
    data = rng.normal(size=(n, 4)).astype(np.float32)
    mask = rng.random(n) > 0.3
    crops = rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)

    def gen():
        for i in range(0, n, 5):
            yield {"data": data[i:i + 5], "mask": mask[i:i + 5], "crops": crops[i:i + 5]}

    rows = RowChunks(n, (4,), np.float32, gen, columns={"mask": ((), bool), "crops": ((8, 8, 3), np.uint8)})
    res = StageResult(data=rows, extras={"boxes": np.ones((n, 4), np.float32)})
    d = dense(res)
    np.testing.assert_array_equal(d.data, data)
    np.testing.assert_array_equal(d.mask, mask)
    np.testing.assert_array_equal(d.extras["crops"], crops)
    w = ShardWriter(tmp_path, "toy_a", "ef" * 16, {})
    w.add("new", res)
    rec = w.commit()
    with h5py.File(tmp_path / "old.h5", "w") as h5:
        write_result(h5, "old", StageResult(data=data, mask=mask,
                                            extras={"crops": crops, "boxes": np.ones((n, 4), np.float32)}), {})
    with h5py.File(tmp_path / rec.relpath, "r") as new, h5py.File(tmp_path / "old.h5", "r") as old:
        for name in ("data", "mask", "extras/crops", "extras/boxes"):
            a, b = new["new"][name], old["old"][name]
            assert (a.shape, a.dtype, a.chunks, a.compression) == (b.shape, b.dtype, b.chunks, b.compression), name
            assert a[()].tobytes() == b[()].tobytes(), name
    bad = RowChunks(n, (4,), np.float32, lambda: ({"data": data[i:i + 5], "mask": mask[i:i + 4]}
                                                   for i in range(0, n, 5)), columns={"mask": ((), bool)})
    with pytest.raises(ValueError, match="differ in length"):
        dense(StageResult(data=bad))


def test_a_task_keeps_no_finished_videos_inputs_in_memory(tmp_path, clip_bank):
    from avpipe.pipeline.runner import run_task

    vids = _copy(clip_bank, tmp_path / "v", ["a.mp4", "b.mp4", "c.mp4"])
    assert run_extract(tmp_path / "cache", vids, stages=["toy_a"], progress=False).exit_code == 0
    with Cache(tmp_path / "cache", create=True) as cache:
        plan = make_plan(cache, vids, stages=["toy_b"])
        state = _RunState(cache, plan, RunSummary([], 0, 0, 0, 0.0))
        for name in ("probe", "toy_a"):
            state.done_now[name] = set(plan.by_cid())
            state.shards_now[name] = cache.index.entry_shards(plan.stages[name].fingerprint.value)
        (task,) = _make_tasks(state, "toy_b", sorted(plan.stages["toy_b"].todo), Executor(1))
    assert len(task.videos) == 3
    res = run_task(task)
    assert not res.failures and res.shard is not None and len(res.shard.rows) == 3
    for _, inputs in task.videos:  # every input was read (toy_b reads toy_a's rows) and let go
        assert inputs["toy_a"].timestamps is not None
        assert "data" not in vars(inputs["toy_a"]) and "data" not in vars(inputs["probe"])
