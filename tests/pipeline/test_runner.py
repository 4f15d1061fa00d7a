"""End-to-end behaviour of plan + execute + store on real tiny clips."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from avpipe.pipeline.plan import PlanError
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.store import Cache
from tests.media import make_audio_only, truncate

TOY = ["toy_b"]


def _run(cache, videos, **kw):
    kw.setdefault("stages", TOY)
    kw.setdefault("progress", False)
    return run_extract(cache, videos, **kw)


def _snapshot(cache_root):
    """{(stage, content id): (data, mask)} for everything the index says is complete."""
    with Cache(cache_root) as c:
        out = {}
        for e in c.list():
            ent = c.read(e.stage, e.content_id, fingerprint=e.fingerprint)
            out[(e.stage, e.content_id)] = (ent.data.copy(), ent.mask.copy())
        return out


def test_extract_then_read(tmp_path, videos, toy_log):
    s = _run(tmp_path / "cache", videos)
    assert s.exit_code == 0, s.render()
    assert [st.computed for st in s.stages] == [4, 4, 4]
    with Cache(tmp_path / "cache") as c:
        e = c.read("toy_b", "sub dir/é video.mp4")
        assert e.key == "sub dir/é video.mp4"
        np.testing.assert_allclose(e.timestamps, np.arange(10) / 10, atol=1e-6)
        assert e.data.shape == (10, 1) and e.mask.tolist() == [i % 2 == 0 for i in range(10)]
        # by content id and by fingerprint give the same entry
        e2 = c.read(e.fingerprint, e.content_id)
        assert e2.shard == e.shard and e2.stage == "toy_b"
        assert c.resolve_video(e.content_id[:10]) == e.content_id
        p = c.read("probe", "b.mp4")
        assert p.attrs["n_frames"] == 15 and len(p.data) == 15
        assert sorted(k for k, _ in c.videos()) == ["a.mp4", "b.mp4", "sub dir/a.mp4", "sub dir/é video.mp4"]
        with pytest.raises(KeyError, match="cached for this video: probe@"):
            c.read("toy_slow", "a.mp4")
        with pytest.raises(KeyError, match="unknown video"):
            c.read("probe", "nope.mp4")


def test_summary_says_how_long_each_stage_took(tmp_path, videos):
    """The per-stage split of a run (what a user profiling a batch reads first): a ``wall s``
    column with each stage's seconds, which add up to no more than the run."""
    s = _run(tmp_path / "cache", videos, stages=["toy_slow"])
    table = s.render().splitlines()
    head = next(ln.split() for ln in table if ln.split()[:1] == ["stage"])
    col = head.index("wall")
    rows = {ln.split()[0]: float(ln.split()[col]) for ln in table[table.index(next(
        ln for ln in table if ln.split()[:1] == ["stage"])) + 1:] if ln.split() and ln.split()[1].isdigit()}
    assert set(rows) == {st.name for st in s.stages} and "toy_slow" in rows
    assert rows["toy_slow"] == round(next(st.seconds for st in s.stages if st.name == "toy_slow"), 2)
    assert rows["toy_slow"] > 0 and sum(rows.values()) <= s.total_s


def test_warm_rerun_computes_nothing_and_hashes_nothing(tmp_path, videos, toy_log):
    _run(tmp_path / "cache", videos)
    toy_log.clear()
    s = _run(tmp_path / "cache", videos)
    assert s.exit_code == 0 and s.hashed == 0
    assert all(st.computed == 0 and st.cached == 4 for st in s.stages)
    assert toy_log.lines() == []


def test_same_bytes_elsewhere_or_moved_is_not_recomputed(tmp_path, videos, toy_log):
    cache = tmp_path / "cache"
    _run(cache, videos)
    toy_log.clear()
    copy = tmp_path / "copy"
    shutil.copytree(videos, copy / "nested")  # same bytes, new paths and inodes
    s = _run(cache, copy)
    assert s.exit_code == 0 and all(st.computed == 0 for st in s.stages)
    moved = tmp_path / "moved"
    videos.rename(moved)  # same inodes: not even re-hashed
    s = _run(cache, moved)
    assert s.hashed == 0 and all(st.computed == 0 for st in s.stages)
    assert toy_log.lines() == []
    with Cache(cache) as c:  # keys of every location are known
        assert c.read("toy_a", "nested/b.mp4").content_id == c.read("toy_a", "b.mp4").content_id


def test_duplicate_bytes_in_one_batch_computed_once(tmp_path, videos, toy_log):
    shutil.copy(videos / "a.mp4", videos / "a_copy.mp4")
    s = _run(tmp_path / "cache", videos)
    assert (s.n_files, s.n_videos) == (5, 4)
    assert toy_log.count("toy_a") == 4


def test_config_change_recomputes_that_subtree_only(tmp_path, videos, toy_log):
    cache = tmp_path / "cache"
    _run(cache, videos)
    toy_log.clear()
    s = _run(cache, videos, config=PipelineConfig({"toy_b": {"offset": 1.0}}))
    assert [st.computed for st in s.stages] == [0, 0, 4]
    toy_log.clear()
    s = _run(cache, videos, config=PipelineConfig({"toy_a": {"scale": 2.0}}))
    assert [st.computed for st in s.stages] == [0, 4, 4]
    with Cache(cache) as c:
        assert len(c.fingerprints("toy_b")) == 3
        default = c.read("toy_b", "a.mp4")  # the default configs, not the newest entry
        np.testing.assert_allclose(default.data[:, 0], np.arange(10) / 10 + np.arange(10), atol=1e-5)
        scaled = c.read("toy_b", "a.mp4", config=PipelineConfig({"toy_a": {"scale": 2.0}}))
        np.testing.assert_allclose(scaled.data[:, 0], np.arange(10) / 10 * 2 + np.arange(10), atol=1e-5)
        old = [f for f in c.fingerprints("toy_b") if f.config == {"offset": 1.0}][0]
        pinned = c.read("toy_b", "a.mp4", fingerprint=old.fingerprint[:12])
        np.testing.assert_allclose(pinned.data[:, 0], np.arange(10) / 10 + np.arange(10) + 1, atol=1e-5)


def test_force_reruns_stage_and_dependents(tmp_path, videos, toy_log):
    cache = tmp_path / "cache"
    _run(cache, videos)
    before = {(e.stage, e.content_id): e.shard for e in Cache(cache).list()}
    toy_log.clear()
    s = _run(cache, videos, stages=None, only="toy_a", force=True)
    assert {st.name: st.computed for st in s.stages} == {"probe": 0, "toy_a": 4, "toy_b": 4}
    after = {(e.stage, e.content_id): e.shard for e in Cache(cache).list()}
    assert all(after[k] != before[k] for k in after if k[0] != "probe")  # repointed to new shards
    assert all(after[k] == before[k] for k in after if k[0] == "probe")
    assert toy_log.count("toy_a") == 4 and toy_log.count("toy_b") == 4


def test_force_invalidates_dependents_outside_the_run(tmp_path, videos):
    cache = tmp_path / "cache"
    _run(cache, videos)
    s = _run(cache, videos, stages=["toy_a"], only=None)  # sanity: nothing to do
    assert all(st.computed == 0 for st in s.stages)
    from avpipe.pipeline.plan import select_stages

    order, forced = select_stages(["toy_a"], "toy_a", True)
    assert forced == {"toy_a"} and "toy_b" not in order
    s = run_extract(cache, videos, stages=["toy_a"], only="toy_a", force=True, progress=False)
    with Cache(cache) as c:
        assert c.list("toy_b") == []  # stale entries of the dependent are gone
    s = _run(cache, videos)
    assert [st.computed for st in s.stages] == [0, 0, 4]


def test_bad_inputs_fail_per_video_and_batch_completes(tmp_path, videos, clip_bank, toy_log):
    (videos / "zero.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("hello, not a video\n" * 10)
    shutil.copy(clip_bank / "c0.mp4", videos / "trunc.mp4")
    truncate(videos / "trunc.mp4", 0.6)
    make_audio_only(videos / "voice.mp4")
    cache = tmp_path / "cache"
    s = _run(cache, videos)
    assert s.exit_code == 1
    probe = s.stages[0]
    assert (probe.computed, probe.failed) == (4, 4)
    assert (s.stages[1].computed, s.stages[1].skipped, s.stages[1].failed) == (4, 4, 0)
    with Cache(cache) as c:
        fails = {f.key: f for f in c.failures()}
        assert set(fails) == {"zero.mp4", "text.mp4", "trunc.mp4", "voice.mp4"}
        assert all(f.stage == "probe" for f in fails.values())  # dependents: skipped, not failed
        assert "no video stream" in fails["voice.mp4"].message
        assert "empty file" in fails["zero.mp4"].message
        assert "Traceback" in fails["text.mp4"].traceback
    # not retried by default, retried with retry_failed
    s = _run(cache, videos)
    assert s.stages[0].failed_before == 4 and s.stages[0].failed == 0
    assert "--retry-failed" in s.render()
    s = _run(cache, videos, retry_failed=True)
    assert s.stages[0].failed == 4
    (videos / "zero.mp4").unlink()
    (videos / "text.mp4").unlink()
    (videos / "trunc.mp4").unlink()
    (videos / "voice.mp4").unlink()
    assert _run(cache, videos).exit_code == 0


def test_wrong_row_count_and_exceptions_are_stage_failures(tmp_path, videos):
    (videos / "will fail.mp4").write_bytes((videos / "a.mp4").read_bytes() + b"\0")
    s = _run(tmp_path / "cache", videos, stages=["toy_bad", "toy_fail"])
    by = {st.name: st for st in s.stages}
    assert by["toy_bad"].failed == 5 and by["toy_fail"].failed == 1 and by["toy_fail"].computed == 4
    msgs = [f.message for f in s.failures if f.stage == "toy_bad"]
    assert all("returned 9 rows but probe found 10 frames" in m or "returned 14 rows but probe found 15" in m
               for m in msgs)
    assert s.exit_code == 1


def test_changed_or_missing_shard_is_recomputed(tmp_path, videos, toy_log):
    cache = tmp_path / "cache"
    _run(cache, videos)
    with Cache(cache) as c:
        shard = c.root / c.list("toy_a")[0].shard
        n_in_shard = sum(1 for e in c.list("toy_a") if e.shard == c.list("toy_a")[0].shard)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated behind the index's back
    toy_log.clear()
    s = _run(cache, videos)
    assert s.stages[1].computed == n_in_shard and s.dropped_entries >= n_in_shard
    assert _snapshot(cache).keys() == {(st, c) for st in ("probe", "toy_a", "toy_b")
                                       for c in [v for _, v in Cache(cache).videos()]}


def test_cache_paths_never_come_from_video_names(tmp_path, clip_bank):
    v = tmp_path / "videos"
    weird = v / ".." / "videos" / "a..b" / "x y" / "ü"
    weird.mkdir(parents=True)
    shutil.copy(clip_bank / "c0.mp4", weird / "..mp4.mp4")  # hidden: skipped
    shutil.copy(clip_bank / "c0.mp4", weird / "%2e%2e%2f..mp4")
    shutil.copy(clip_bank / "c1.mp4", weird / "-rf *.mp4")
    cache = tmp_path / "cache"
    s = _run(cache, v)
    assert s.n_files == 2 and s.exit_code == 0
    files = [p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()]
    pat = re.compile(r"^(index\.sqlite(-wal|-shm)?|\.lock|shards/[a-z_]+/[0-9a-f]{16}/[0-9a-f]{32}\.h5)$")
    assert files and all(pat.match(f) for f in files), files
    with Cache(cache) as c:
        with pytest.raises(ValueError, match="escapes"):
            c.shard_path("../../etc/passwd")
        assert c.read("toy_b", "a..b/x y/ü/-rf *.mp4").data.shape == (15, 1)


def test_usage_errors(tmp_path, videos):
    with pytest.raises(PlanError, match="unknown stage"):
        _run(tmp_path / "c", videos, stages=["nope"])
    with pytest.raises(PlanError, match="unknown option"):
        _run(tmp_path / "c", videos, config=PipelineConfig({"toy_a": {"bogus": 1}}))
    with pytest.raises(PlanError, match="unknown stage"):
        _run(tmp_path / "c", videos, config=PipelineConfig({"nope": {}}))


def test_parallel_backends_match_serial(tmp_path, videos):
    _run(tmp_path / "serial", videos)
    ref = _snapshot(tmp_path / "serial")
    s = _run(tmp_path / "loky", videos, jobs=2)
    assert s.exit_code == 0
    got = _snapshot(tmp_path / "loky")
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k][0], ref[k][0])
        np.testing.assert_array_equal(got[k][1], ref[k][1])


def test_dask_backend_with_local_cluster(tmp_path, videos):
    distributed = pytest.importorskip("dask.distributed")
    _run(tmp_path / "serial", videos)
    ref = _snapshot(tmp_path / "serial")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        s = _run(tmp_path / "dask", videos, backend="dask", scheduler=cluster.scheduler_address, jobs=2)
    assert s.exit_code == 0, s.render()
    got = _snapshot(tmp_path / "dask")
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k][0], ref[k][0])
