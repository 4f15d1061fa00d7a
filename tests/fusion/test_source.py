"""The trainer's read path: exact fingerprint resolution, and training from a read-only cache."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from avpipe.fusion.source import CacheSource, FeatureError, StageRef
from tests.fusion.conftest import small_config
from tests.readonly import ReadOnly, snapshot, tree


def test_train_from_read_only_cache(corpus, tmp_path):
    from avpipe.fusion.train import train

    cache = tmp_path / "cache"
    shutil.copytree(corpus["cache"], cache)
    before = snapshot(cache)
    with ReadOnly(tree(cache)):
        cfg = small_config({**corpus, "cache": cache}, "jca", tmp_path / "run", epochs=1, model={"hidden": 8})
        s = train(cfg, log=lambda m: None)
    assert s["best_epoch"] == 0 and (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert snapshot(cache) == before


def test_stage_name_with_two_candidate_fingerprints_is_an_error(corpus, tmp_path):
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.stage import StageResult

    cache = tmp_path / "cache"
    shutil.copytree(corpus["cache"], cache)
    src = CacheSource(cache)
    videos = [k for k, _ in src.videos()]
    first = src.resolve(StageRef("visual"), videos)  # one fingerprint: unambiguous
    assert first == corpus["fps"]["visual"]
    cids = dict(src.videos())
    other = write_precomputed(cache, "visual", None,
                              {cids[k]: StageResult(np.zeros((3, 2), np.float32)) for k in videos},
                              {c: k for k, c in src.videos()}, {"experiment": 2})
    src = CacheSource(cache)
    with pytest.raises(FeatureError) as ei:
        src.resolve(StageRef("visual"), videos)
    msg = str(ei.value)
    assert first[:16] in msg and other[:16] in msg and "experiment" in msg and "visual@FINGERPRINT" in msg
    assert src.resolve(StageRef("visual", first[:10]), videos) == first  # pinning resolves it
