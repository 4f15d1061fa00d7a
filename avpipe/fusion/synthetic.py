"""A synthetic labelled corpus written through the store: for tests, demos and benchmarks.

Each video has two smooth latent signals, ``z_v`` (carried by the visual features) and ``z_a``
(carried by the audio features), each a random linear embedding plus noise. Labels depend on
*both*: ``valence = tanh(g·(z_v + z_a))``, ``arousal = tanh(g·(z_a − z_v))``, so a unimodal model can
explain about half of the variance and a fusion model nearly all of it. Text carries a weak copy
of ``z_a``. ~8 % of label rows are ``-5`` (unlabelled) and ~5 % of visual rows invalid (no face).
Labels are written as an Aff-Wild2 folder (``Train_Set/``, ``Validation_Set/``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avpipe.pipeline.stage import StageResult

DEFAULT_DIMS = {"visual": 512, "audio": 128, "text": 384}
STAGE_OF = {"visual": "visual", "audio": "logmel", "text": "text"}


@dataclass
class SyntheticSpec:
    n_videos: int = 20
    min_frames: int = 200
    max_frames: int = 400
    dims: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DIMS))
    dtype: str = "float16"
    val_fraction: float = 0.25
    noise: float = 0.5
    smooth: int = 15
    gain: float = 0.8
    unlabelled: float = 0.08
    no_face: float = 0.05
    seed: int = 0
    shard_size: int = 64


def _smooth_noise(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    x = rng.standard_normal(n + w)
    k = np.ones(w) / np.sqrt(w)
    return np.convolve(x, k, mode="valid")[:n]


def make_corpus(cache_root: str | Path, labels_dir: str | Path, spec: SyntheticSpec | None = None,
                modalities: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write the corpus; returns modality -> fingerprint. Videos are named ``vid0000.mp4`` …"""
    from avpipe.pipeline.ingest import write_precomputed

    spec = spec or SyntheticSpec()
    mods = dict(modalities or {m: STAGE_OF[m] for m in spec.dims})
    rng = np.random.default_rng(spec.seed)
    proj = {m: rng.standard_normal((1, spec.dims[m])).astype(np.float32) / 1.0 for m in mods}
    labels_dir = Path(labels_dir)
    n_val = max(1, int(round(spec.n_videos * spec.val_fraction)))
    results: dict[str, dict[str, StageResult]] = {m: {} for m in mods}
    keys: dict[str, str] = {}
    dt = np.dtype(spec.dtype)
    fingerprints: dict[str, str] = {}
    pending = 0

    def flush() -> None:
        for m, st in mods.items():
            if results[m]:
                fingerprints[m] = write_precomputed(cache_root, st, None, results[m], keys,
                                           {"synthetic": True, "dim": spec.dims[m], "seed": spec.seed},
                                           shard_size=spec.shard_size)
                results[m].clear()

    for i in range(spec.n_videos):
        n = int(rng.integers(spec.min_frames, spec.max_frames + 1))
        zv, za = _smooth_noise(rng, n, spec.smooth), _smooth_noise(rng, n, spec.smooth)
        cid = f"{i:08x}" + "0" * 32
        key = f"vid{i:04d}.mp4"
        keys[cid] = key
        lat = {"visual": zv, "audio": za, "text": 0.3 * za}
        for m in mods:
            d = spec.dims[m]
            x = lat.get(m, np.zeros(n))[:, None] * proj[m] + spec.noise * rng.standard_normal((n, d)).astype(np.float32)
            mask = np.ones(n, bool)
            if m == "visual":
                mask = rng.random(n) > spec.no_face
                x[~mask] = 0
            results[m][cid] = StageResult(x.astype(dt), mask, attrs={"synthetic": True})
        val = np.tanh(spec.gain * (zv + za))
        aro = np.tanh(spec.gain * (za - zv))
        y = np.stack([val, aro], 1)
        y[rng.random(n) < spec.unlabelled] = -5
        split = "Validation_Set" if i < n_val else "Train_Set"
        p = labels_dir / split / f"vid{i:04d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("valence,arousal\n" + "\n".join(f"{a:.4f},{b:.4f}" if a != -5 else "-5,-5" for a, b in y) + "\n")
        pending += 1
        if pending >= spec.shard_size:
            flush()
            pending = 0
    flush()
    return fingerprints
