"""Given upstream entries (``Given``): a run plans downstream stages on pinned entries, computes
missing ones only with the given source, and never with the stage registered under the name."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.fingerprint import stage_fingerprint, walk
from avpipe.pipeline.given import Given, given_from_cache
from avpipe.pipeline.ingest import precomputed
from avpipe.pipeline.plan import PlanError
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.stage import Stage, StageResult
from avpipe.pipeline.store import Cache
from tests.pipeline.toy_stages import ToyB


class SevenSource(Stage):
    """Stands for entries of ``toy_a`` read from elsewhere: every row ``[7, 7]``; fails on keys
    containing ``nope``."""

    name = "toy_a"
    version = "seven-1"

    def compute(self, video, inputs):
        if "nope" in video.key:
            raise ValueError(f"{video.key}: nothing to read")
        return StageResult(np.full((len(inputs["probe"].data), 2), 7.0))


def _probe_fp() -> str:
    return walk(["probe"])["probe"].fingerprint.value


def _log(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture()
def two(tmp_path, clip_bank):
    one, both = tmp_path / "one", tmp_path / "both"
    one.mkdir()
    both.mkdir()
    shutil.copy(clip_bank / "c0.mp4", one / "a.mp4")
    shutil.copy(clip_bank / "c0.mp4", both / "a.mp4")
    shutil.copy(clip_bank / "c1.mp4", both / "b.mp4")
    return one, both


def test_given_entries_are_read_and_never_computed_by_the_registered_stage(tmp_path, two, monkeypatch):
    one, both = two
    cache, log = tmp_path / "cache", tmp_path / "log"
    monkeypatch.setenv("AVPIPE_TOY_LOG", str(log))
    scaled = PipelineConfig({"toy_a": {"scale": 3.0}})
    assert run_extract(cache, one, scaled, stages=["toy_a"], progress=False).ok  # toy_a for a.mp4 only
    with Cache(cache) as c:
        pinned = given_from_cache(c, next(e.fingerprint for e in c.list(stage="toy_a")))
    fp = pinned.fingerprint
    log.unlink()
    run = run_extract(cache, both, stages=["toy_b"], progress=False, given={"toy_a": pinned})
    assert _log(log).count("toy_a") == 0  # b.mp4 has no given toy_a entry: skipped, not computed
    b = {s.name: s for s in run.stages}["toy_b"]
    assert (b.computed, b.skipped) == (1, 1)
    assert run.skipped == [("toy_b", "b.mp4", f"toy_a has no entry in the given {fp.value[:16]}")]
    want = stage_fingerprint(ToyB(), {"probe": _probe_fp(), "toy_a": fp.value}).value
    assert b.fingerprint == want
    with Cache(cache) as c:
        assert {e.fingerprint for e in c.list(stage="toy_a")} == {fp.value}  # nothing under the default config
        got = c.read("toy_b", "a.mp4", fingerprint=want).data
        a = c.read("toy_a", "a.mp4", fingerprint=fp.value).data
    np.testing.assert_allclose(got[:, 0], a.sum(axis=1))


def test_a_given_source_computes_the_missing_entries_under_the_given_fingerprint(tmp_path, two):
    _, both = two
    cache = tmp_path / "cache"
    fp = precomputed("toy_a", {"seven": True}, "seven-1", {"probe": _probe_fp()})
    run = run_extract(cache, both, stages=["toy_b"], progress=False, given={"toy_a": Given(fp, SevenSource())})
    assert run.ok, run.render()
    with Cache(cache) as c:
        assert c.read("toy_a", "b.mp4", fingerprint=fp.value).data.tolist()[0] == [7.0, 7.0]
        assert {e.fingerprint for e in c.list(stage="toy_a")} == {fp.value}
        b = c.read("toy_b", "b.mp4", fingerprint={s.name: s for s in run.stages}["toy_b"].fingerprint)
        assert b.data[:, 0].tolist() == [14.0] * len(b.data)
        rec = c.index.fingerprint_row(fp.value)
    assert (rec["version"], rec["weights_id"], rec["upstream"]) == ("seven-1", None, {"probe": _probe_fp()})


def test_a_given_sources_failures_are_recorded_and_retried_when_named(tmp_path, clip_bank):
    videos, cache = tmp_path / "v", tmp_path / "cache"
    videos.mkdir()
    shutil.copy(clip_bank / "c0.mp4", videos / "a.mp4")
    shutil.copy(clip_bank / "c1.mp4", videos / "nope.mp4")
    fp = precomputed("toy_a", {"seven": True}, "seven-1", {"probe": _probe_fp()})
    given = {"toy_a": Given(fp, SevenSource())}
    run = run_extract(cache, videos, stages=["toy_b"], progress=False, given=given)
    assert [(f.stage, f.key, f.message) for f in run.failures] == [("toy_a", "nope.mp4", "nope.mp4: nothing to read")]
    with Cache(cache) as c:
        assert c.index.failures(stage="toy_a")[0].fingerprint == fp.value
    again = run_extract(cache, videos, stages=["toy_b"], progress=False, given=given, retry_failed=["toy_a"])
    assert [f.key for f in again.failures] == ["nope.mp4"]  # planned again, not "failed before"
    assert {s.name: s.failed_before for s in again.stages}["toy_a"] == 0
    plain = run_extract(cache, videos, stages=["toy_b"], progress=False, given=given)
    assert {s.name: s.failed_before for s in plain.stages}["toy_a"] == 1 and not plain.failures


def test_given_entries_of_another_probe_are_a_plan_error(tmp_path, two):
    one, _ = two
    fp = precomputed("toy_a", {"seven": True}, "seven-1", {"probe": "0" * 64})
    with pytest.raises(PlanError, match="derived from probe 0000000000000000"):
        run_extract(tmp_path / "cache", one, stages=["toy_b"], progress=False, given={"toy_a": Given(fp)})
    assert not (tmp_path / "cache").exists()  # a usage error creates nothing


def test_a_source_must_be_named_like_the_entries_it_gives():
    fp = precomputed("toy_b", {}, "x")
    with pytest.raises(ValueError, match="source stage is named 'toy_a'"):
        Given(fp, SevenSource())


def test_forcing_a_given_stage_without_a_source_computes_none_of_it(tmp_path, two, monkeypatch):
    one, both = two
    cache, log = tmp_path / "cache", tmp_path / "log"
    assert run_extract(cache, one, stages=["toy_a"], progress=False).ok
    with Cache(cache) as c:
        pinned = given_from_cache(c, next(e.fingerprint for e in c.list(stage="toy_a")))
    monkeypatch.setenv("AVPIPE_TOY_LOG", str(log))
    run_extract(cache, both, stages=["toy_b"], only="toy_a", force=True, progress=False, given={"toy_a": pinned})
    assert "toy_a" not in _log(log)
    with Cache(cache) as c:
        assert len([e for e in c.list(stage="toy_a")]) == 1  # a.mp4's, untouched
