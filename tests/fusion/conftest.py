"""Shared fixtures: a small synthetic corpus written through the store (avpipe.pipeline.ingest)."""
from __future__ import annotations

from pathlib import Path

import pytest

SMALL_DIMS = {"visual": 32, "audio": 16, "text": 24}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

    root = tmp_path_factory.mktemp("corpus")
    spec = SyntheticSpec(n_videos=24, min_frames=160, max_frames=260, dims=dict(SMALL_DIMS), seed=0)
    fps = make_corpus(root / "cache", root / "labels", spec)
    return {"cache": root / "cache", "labels": root / "labels", "root": root, "fps": fps}


def small_config(corpus, fusion: str, out: Path, **kw):
    from avpipe.fusion.config import TrainConfig

    # recipe avpipe: these settings (small windows, per-frame tokens, no schedule) are avpipe's; the
    # authors' recipes are pinned in tests/fusion/test_recipes.py
    base = dict(recipe="avpipe", fusion=fusion, labels=str(corpus["labels"]), cache=str(corpus["cache"]), out=str(out),
                window=32, hop=16, clip_len=1, batch_size=32, epochs=6, lr=2e-3, schedule="none", device="cpu",
                num_threads=1, seed=0, patience=100, plot_videos=2)
    base.update(kw)
    return TrainConfig(**base)
