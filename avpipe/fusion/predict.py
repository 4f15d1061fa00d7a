"""Prediction and evaluation with a trained run.

* :func:`evaluate_run` — best checkpoint on the run's validation split: official CCC (all valid
  frames concatenated) and per video, raw and smoothed (docs/models.md#smoothing).
* :func:`predict_videos` — for a folder of videos: extract what the run's features need through
  the pipeline runner (same stages, same stage configs as recorded by the fingerprints in the run
  config), then write one per-frame CSV per video.

Output formats: ``csv`` = ``frame,valence,arousal`` (0-based frame = cache row); ``affwild2`` =
header ``valence,arousal`` and one line per frame (the ABAW per-video submission form).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from avpipe.display import safe_name
from avpipe.fusion.data import InMemoryBanks, Stats, TrackRef, load_bank
from avpipe.fusion.inference import (FORMATS, build_model_from_checkpoint, load_run, predict_provider,
                                     resolve_device, write_prediction)
from avpipe.fusion.metrics import EvalResult, evaluate
from avpipe.fusion.source import FeatureError, FeatureSource
from avpipe.fusion.train import open_source, prepare
from avpipe.pipeline.atomic import atomic_write_text

__all__ = ["FORMATS", "PredictionErrors", "evaluate_run", "predict_videos", "write_prediction"]


def _model_and_stats(run_path: str | Path, device: torch.device, which: str = "best"):
    run, cfg = load_run(run_path)
    ck = run.load_checkpoint(which, map_location=device)
    return run, cfg, build_model_from_checkpoint(ck, device), Stats.from_dict(ck["stats"]), ck


def evaluate_run(run_path: str | Path, *, cache: str | None = None, source: FeatureSource | None = None,
                 device: str = "auto", which: str = "best") -> EvalResult:
    """Re-score the run's checkpoint on its validation split; writes ``eval/metrics.json`` and
    ``eval/per_video.csv`` in the run folder."""
    dev = resolve_device(device)
    run, cfg, model, stats, _ = _model_and_stats(run_path, dev, which)
    if cache:
        cfg.cache = cache
    pinned = {m: f"{d['stage']}@{d['fingerprint']}" for m, d in cfg.resolved_features.items()}
    cfg.features = pinned or cfg.features
    source = source if source is not None else open_source(cfg)
    prep = prepare(cfg, source)
    bank = load_bank(source, prep.fps, prep.val, device=dev, dtype=cfg.feature_dtype, tolerance=cfg.label_tolerance)
    bank.set_stats(stats)
    preds, labels, valid = predict_provider(model, InMemoryBanks(bank), cfg.window, int(cfg.eval_hop or cfg.hop),
                                            int(cfg.batch_size or 32) * 2)
    ev = evaluate(preds, labels, valid, cfg.smoothing)
    run.write_json("eval/metrics.json", {"checkpoint": which, "overall": ev.overall,
                                         "overall_smoothed": ev.overall_smoothed, "n_frames": ev.n_frames,
                                         "n_videos": len(ev.per_video)})
    s = io.StringIO()
    cols = ["video"] + sorted({k for r in ev.per_video.values() for k in r})
    w = csv.DictWriter(s, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for name, row in sorted(ev.per_video.items()):
        w.writerow({"video": name, **row})
    atomic_write_text(run.eval_dir / "per_video.csv", s.getvalue())
    return ev


def _pipeline_config(cache_root: str, fps: Mapping[str, tuple[str, str]]) -> tuple[Any, list[str]]:
    """The stage configs that produced the run's fingerprints (from the cache index)."""
    from avpipe.pipeline.settings import PipelineConfig
    from avpipe.pipeline.store import Cache

    stages: dict[str, dict[str, Any]] = {}
    with Cache(cache_root) as c:
        rows = {f.fingerprint: f for f in c.fingerprints()}

        def add(fp: str) -> None:
            info = rows.get(fp)
            if info is None:
                return
            stages.setdefault(info.stage, dict(info.config))
            for up in (info.upstream or {}).values():
                add(up)

        for _, fp in fps.values():
            add(fp)
    return PipelineConfig(stages), sorted({s for s, _ in fps.values()})


class PredictionErrors(RuntimeError):
    """Some videos could not be predicted; the others were written (``written``)."""

    def __init__(self, failed: list[str], written: list[Path]) -> None:
        super().__init__(f"{len(failed)} video(s) could not be predicted: {', '.join(map(safe_name, failed))}; "
                         f"{len(written)} written")
        self.failed, self.written = failed, written


def predict_videos(run_path: str | Path, videos: str | Path, out: str | Path, *, cache: str | None = None,
                   fmt: str = "csv", device: str = "auto", extract: bool = True, jobs: int = 1,
                   source: FeatureSource | None = None, keys: list[str] | None = None,
                   log: Callable[[str], None] = print) -> list[Path]:
    """Predict every video under ``videos``; returns the files written under ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use {FORMATS}")
    dev = resolve_device(device)
    run, cfg, model, stats, ck = _model_and_stats(run_path, dev)
    cache_root = cache or cfg.cache
    fps = {m: (d["stage"], d["fingerprint"]) for m, d in cfg.resolved_features.items()}
    if keys is None:
        from avpipe.pipeline.discover import iter_video_files

        keys = [f.key for f in iter_video_files(videos)]
    if not keys:
        raise FileNotFoundError(f"no videos under {safe_name(str(videos))}")
    if extract and source is None:
        from avpipe.pipeline.runner import run_extract

        config, stage_names = _pipeline_config(cache_root, fps)
        log(f"extracting {', '.join(stage_names)} for {len(keys)} video(s) into {cache_root} (cached entries reused)")
        summary = run_extract(cache_root, videos, config, stages=stage_names, jobs=jobs)
        if not summary.ok:
            log(summary.render())
    if source is None:
        from avpipe.fusion.source import CacheSource

        source = CacheSource(cache_root)
    from avpipe.pipeline.discover import output_path_for

    written = []
    failed: list[str] = []
    for key in keys:
        # One video's problem (no features, a bad key) is reported and the batch goes on.
        try:
            target = output_path_for(out, key, ".txt" if fmt == "affwild2" else ".csv")
            missing = [m for m, (s, f) in fps.items() if not source.has(s, f, key)]
            if missing:
                raise FeatureError(
                    f"{safe_name(key)}: no cached features for {missing} with the run's fingerprints "
                    f"({', '.join(f'{m}={fps[m][0]}@{fps[m][1][:12]}' for m in missing)}); the "
                    f"extraction failed, or the stage config, code version or weights differ from training")
            bank = load_bank(source, fps, [TrackRef(key, key, None)], device=dev, dtype=cfg.feature_dtype)
            bank.set_stats(stats)
            preds, _, _ = predict_provider(model, InMemoryBanks(bank), ck["window"],
                                           int(cfg.eval_hop or cfg.hop), int(cfg.batch_size or 32) * 2)
            written.append(write_prediction(target, preds[key], fmt))
        except (FeatureError, ValueError) as e:
            failed.append(key)
            log(f"error: {e}")
    if failed:
        raise PredictionErrors(failed, written)
    return written
