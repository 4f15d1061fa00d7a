"""The per-worker stage memo (:mod:`avpipe.pipeline.stage_memo`)."""
from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

from avpipe.pipeline import stage_memo


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's heap")
def test_freed_heap_blocks_leave_the_workers_resident_memory():
    """A model freed as heap blocks (below malloc's mmap threshold) between blocks still in use
    stays resident until the heap is trimmed: the trim gives most of it back."""
    gc.collect()
    blocks = [np.ones(16_000, np.float64) for _ in range(8_000)]  # 8,000 x 125 KB on the heap
    kept = blocks[1::2]  # what the next stage holds, interleaved with the freed model
    del blocks
    gc.collect()
    freed = _rss_mb()
    stage_memo._trim_heap()
    trimmed = _rss_mb()
    assert freed - trimmed > 300  # of the ~490 MB freed between the kept blocks
    assert len(kept) == 4_000
