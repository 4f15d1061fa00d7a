"""Exact reads: a stage name means one config's fingerprint, never the newest entry of any config."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import AmbiguousRead, NotCached

SCALED = PipelineConfig({"toy_a": {"scale": 2.0}})


def _extract(cache, videos, config=None):
    s = run_extract(cache, videos, config, stages=["toy_a"], progress=False)
    assert s.exit_code == 0, s.render()


def test_second_experiment_does_not_change_what_a_stage_name_reads(tmp_path, videos):
    cache = tmp_path / "cache"
    _extract(cache, videos)
    _extract(cache, videos, SCALED)  # the newer entry has another config
    with Cache(cache) as c:
        e = c.read("toy_a", "a.mp4")
        np.testing.assert_allclose(e.data[:, 0], e.timestamps, atol=1e-6)  # scale 1: the default
        e2 = c.read("toy_a", "a.mp4", config={"scale": 2.0})
        np.testing.assert_allclose(e2.data[:, 0], 2 * e2.timestamps, atol=1e-6)
        assert e2.fingerprint != e.fingerprint
        # resolve once, then pin: the same entry
        fp = c.resolve("toy_a", {"scale": 2.0})
        assert fp == e2.fingerprint == c.resolve("toy_a", SCALED)
        assert c.read("toy_a", "a.mp4", fingerprint=fp[:12]).shard == e2.shard
        assert c.resolve("toy_a") == e.fingerprint
        toml = tmp_path / "exp.toml"
        toml.write_text("[stages.toy_a]\nscale = 2.0\n")
        assert c.resolve("toy_a", toml) == fp  # a config file, as given to `extract --config`
        both = c.resolve_all(["toy_a"], SCALED)
        assert both == {"probe": c.resolve("probe"), "toy_a": fp}
        with pytest.raises(ValueError, match="unknown stage"):
            c.resolve_all(["toy_a"], {"stages": {"toy_aa": {"scale": 2.0}}})


def test_default_config_missing_but_other_present_is_ambiguous(tmp_path, videos):
    cache = tmp_path / "cache"
    _extract(cache, videos, SCALED)  # only a non-default config was ever extracted
    with Cache(cache) as c:
        with pytest.raises(AmbiguousRead) as ei:
            c.read("toy_a", "a.mp4")
        msg = str(ei.value)
        fp = c.resolve("toy_a", {"scale": 2.0})
        assert fp[:16] in msg and '"scale":2.0' in msg.replace(" ", "") and "fingerprint=" in msg
        # said once: the candidate listed once, what was asked once, one line, how to pick it
        assert msg.replace(" ", "").count('"scale":2.0') == 1 and msg.count("toy_a v1 config") == 1
        assert "\n" not in msg and f"Pick one with fingerprint={fp[:16]!r}" in msg
        assert ei.value.candidates == [(fp, {"scale": 2.0})]
        assert isinstance(ei.value, KeyError)  # old `except KeyError` callers still catch it
        with pytest.raises(NotCached, match="no cached fingerprint of toy_a"):
            c.resolve("toy_a")
        with pytest.raises(NotCached, match=r"toy_a v1 config \{\"scale\":3.0\}"):
            c.resolve("toy_a", {"scale": 3.0})
        assert c.read("toy_a", "a.mp4", config={"scale": 2.0}).fingerprint == fp


def test_entry_of_config_missing_for_one_video_names_the_others(tmp_path, videos):
    cache = tmp_path / "cache"
    _extract(cache, videos)
    _extract(cache, videos, SCALED)
    with Cache(cache) as c:
        cid = c.resolve_video("a.mp4")
        default = c.resolve("toy_a")
    from avpipe.pipeline.index import Index

    with Index(cache / "index.sqlite") as ix:  # the default config lost this video's entry
        ix.db.execute("DELETE FROM entries WHERE fingerprint = ? AND content_id = ?", (default, cid))
    with Cache(cache) as c:
        with pytest.raises(AmbiguousRead, match="other configs of 'toy_a' have one"):
            c.read("toy_a", "a.mp4")
        c.read("toy_a", "b.mp4")  # other videos are unaffected


def test_nothing_cached_for_stage_says_what_is(tmp_path, videos):
    cache = tmp_path / "cache"
    _extract(cache, videos)
    with Cache(cache) as c:
        with pytest.raises(NotCached, match="cached for this video: probe@"):
            c.read("toy_b", "a.mp4")
        with pytest.raises(ValueError, match="either config= or fingerprint="):
            c.read("toy_a", "a.mp4", config={}, fingerprint="ab" * 8)
        with pytest.raises(NotCached, match="belongs to stage 'probe'"):
            c.read("toy_a", "a.mp4", fingerprint=c.resolve("probe"))


def test_timestamps_are_one_time_per_row_for_every_stage():
    """Entry.timestamps: frame times for per-frame stages, sample times for audio, word starts
    for asr (it used to be the video's frame times whatever the rows were)."""
    from avpipe.pipeline.entry import MemoryEntry
    from avpipe.pipeline.types import StageResult

    frames = np.arange(5) / 25.0
    audio = MemoryEntry(StageResult(np.zeros(8000, np.float32), attrs={"sample_rate": 16000, "n_samples": 8000}),
                        stage="audio", timestamps=frames)
    assert len(audio.timestamps) == 8000 and audio.timestamps[1] == 1 / 16000 and audio.timestamps[-1] < 0.5
    words = np.array([[0.2, 0.5], [0.7, 1.1], [1.3, 1.4]])
    asr = MemoryEntry(StageResult(words, attrs={}), stage="asr", timestamps=frames)
    np.testing.assert_array_equal(asr.timestamps, [0.2, 0.7, 1.3])
    vis = MemoryEntry(StageResult(np.zeros((5, 3), np.float32)), stage="visual", timestamps=frames)
    np.testing.assert_array_equal(vis.timestamps, frames)
    assert MemoryEntry(StageResult(np.zeros((5, 3))), stage="visual").timestamps is None


def test_a_shard_checksum_is_the_same_hash_as_a_video_content_id(tmp_path, videos):
    """One file hash: a shard's recorded checksum (re-checked by cache maintenance) is the
    function that names videos, so a change to it would have to change both together."""
    import hashlib

    from avpipe.pipeline.discover import content_hash

    cache = tmp_path / "cache"
    _extract(cache, videos)
    with Cache(cache) as c:
        rows = c.index.shard_rows()
    assert rows
    for relpath, _size, _mtime, blake in rows:
        data = (cache / relpath).read_bytes()
        assert blake == content_hash(cache / relpath) == hashlib.blake2b(data, digest_size=20).hexdigest()
