"""``Entry.extra_at``: scattered rows of an extra, the same from a shard as from memory."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.ingest import write_precomputed
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import StageResult


def _result() -> StageResult:
    crops = np.arange(12 * 4 * 4 * 3, dtype=np.uint8).reshape(12, 4, 4, 3)
    return StageResult(np.zeros((12, 2), np.float32), np.ones(12, bool), extras={"crops": crops})


def test_shard_and_memory_entries_read_the_same_rows(tmp_path):
    res = _result()
    fp = write_precomputed(tmp_path / "c", "faces", None, {"ab" * 20: res}, {"ab" * 20: "v.mp4"}, {"synthetic": True})
    with Cache(tmp_path / "c") as cache:
        shard = cache.read("faces", "v.mp4", fingerprint=fp)
        assert type(shard).__name__ == "ShardEntry"
        memory = MemoryEntry(res, stage="faces")
        whole = res.extras["crops"]
        for rows in ([0], [3, 7, 11], [7, 3, 3], [-1, 0], []):
            want = whole[np.asarray(rows, np.int64)]
            for entry in (shard, memory):
                got = entry.extra_at("crops", rows)
                assert got.shape == want.shape and np.array_equal(got, want), (type(entry).__name__, rows)
        with pytest.raises(IndexError, match="12 rows"):
            shard.extra_at("crops", [2, 12])
        with pytest.raises(KeyError, match="no extra 'nope'"):
            shard.extra_at("nope", [0])
