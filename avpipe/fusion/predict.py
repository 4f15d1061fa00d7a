"""Prediction and evaluation with a trained run.

* :func:`evaluate_run` — best checkpoint on the run's validation split: official CCC (all valid
  frames concatenated) and per video, raw and smoothed (docs/models.md#smoothing).
* :func:`predict_videos` — for a folder of videos: extract what the run's features need through
  the pipeline runner (same stages, same stage configs as recorded by the fingerprints in the run
  config), then write one per-frame CSV per video.

Both go through :class:`avpipe.fusion.predictor.Predictor`, the one path from a run to predictions.

Output formats: ``csv`` = ``frame,valence,arousal`` (0-based frame = cache row); ``affwild2`` =
header ``valence,arousal`` and one line per frame (the ABAW per-video submission form).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.display import safe_name
from avpipe.fusion.inference import FORMATS, write_prediction
from avpipe.fusion.metrics import EvalResult, evaluate
from avpipe.fusion.predictor import Fingerprints, Predictor
from avpipe.fusion.prepare import prepare
from avpipe.fusion.source import FeatureError, FeatureSource
from avpipe.pipeline.atomic import atomic_write_text

__all__ = ["FORMATS", "PredictSetupError", "PredictionErrors", "evaluate_run", "predict_videos",
           "write_prediction", "write_summary"]


def evaluate_run(run_path: str | Path, *, cache: str | None = None, source: FeatureSource | None = None,
                 device: str = "auto", which: str = "best") -> EvalResult:
    """Re-score the run's checkpoint on its validation split; writes ``eval/metrics.json`` and
    ``eval/per_video.csv`` in the run folder."""
    predictor = Predictor.from_run(run_path, cache=cache, source=source, device=device, which=which)
    run, cfg = predictor.run, predictor.config
    pinned = {m: f"{d['stage']}@{d['fingerprint']}" for m, d in cfg.resolved_features.items()}
    cfg.features = pinned or cfg.features
    prep = prepare(cfg, predictor.source)  # the validation split, read with the run's own fingerprints
    preds, labels, valid = predictor.predict_tracks(prep.val, fingerprints=prep.fingerprints, tolerance=cfg.label_tolerance)
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


def _pipeline_config(cfg: Any, cache_root: str, fingerprints: Fingerprints) -> tuple[Any, list[str]]:
    """The stage configs that compute the run's features, and the feature stages to extract.

    From the run itself (``feature_configs``, recorded at training), so that any cache on any
    machine gets exactly the inputs the model was trained on; for runs trained before avpipe
    recorded them, from the index of the cache that has the run's fingerprints. Refuses (a
    :class:`PredictSetupError`) rather than extract some other config: a stage whose code version
    changed, or a run whose configs are known nowhere."""
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.stage import stage_registry
    from avpipe.pipeline.store import Cache

    recorded = dict(getattr(cfg, "feature_configs", None) or {})
    if not recorded:
        try:
            with Cache(cache_root) as c:
                rows = {f.fingerprint: f for f in c.fingerprints()}
        except FileNotFoundError:
            rows = {}

        def add(fp: str) -> None:
            info = rows.get(fp)
            if info is not None and info.stage not in recorded:
                recorded[info.stage] = {"fingerprint": fp, "version": str(info.version), "config": dict(info.config)}
                for up in (info.upstream or {}).values():
                    add(up)

        for _, fp in fingerprints.values():
            add(fp)
        lost = [f"{s}@{fp[:12]}" for s, fp in fingerprints.values() if fp not in rows]
        if lost:
            raise PredictSetupError(
                f"the run records no stage configs (trained before avpipe recorded them) and {cache_root} "
                f"does not have its features {', '.join(lost)}: pass --cache with the cache it was trained "
                f"on, or retrain")
    reg = stage_registry()
    stages: dict[str, dict[str, Any]] = {}
    for st, d in recorded.items():
        ver = str(d.get("version", ""))
        if st not in reg or ver == "precomputed":
            continue  # ingested features: nothing here can compute them (the per-video check says so)
        if ver != str(reg[st].version):
            raise PredictSetupError(
                f"the run's {st!r} features were computed by stage version {ver}, this avpipe has version "
                f"{reg[st].version}: extraction would give other inputs than training; predict on the "
                f"cache the run was trained on (--cache) or retrain")
        stages[st] = dict(d.get("config") or {})
    names = sorted({s for s, _ in fingerprints.values() if s in stages})
    return PipelineConfig(stages), names


class PredictSetupError(RuntimeError):
    """``predict`` cannot reproduce the run's inputs (a stage version changed, configs unknown)."""


class PredictionErrors(RuntimeError):
    """Some videos could not be predicted; the others were written (``written``)."""

    def __init__(self, failed: list[str], written: list[Path]) -> None:
        super().__init__(f"{len(failed)} video(s) could not be predicted: {', '.join(map(safe_name, failed))}; "
                         f"{len(written)} written")
        self.failed, self.written = failed, written


def _times(source: FeatureSource, ref: tuple[str, str], key: str, n: int) -> np.ndarray | None:
    """Seconds of each of a video's first ``n`` frames, from the run's first feature's entry."""
    cache = getattr(source, "cache", None)
    if cache is None:
        return None
    try:
        ts = cache.read(ref[0], key, fingerprint=ref[1]).timestamps
    except Exception:  # noqa: BLE001 - no time base: the column is left out
        return None
    return None if ts is None or len(ts) < n else np.asarray(ts, np.float64)[:n]


def write_summary(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``summary.csv``: per output, frames, mean valence/arousal and the fraction of frames
    each modality was present (a no-face video shows visual coverage 0 beside its values)."""
    cols = ["video", "person", "file", "frames", "valence_mean", "arousal_mean"]
    cols += sorted({k for r in rows for k in r} - set(cols))
    s = io.StringIO()
    w = csv.DictWriter(s, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, s.getvalue())
    return path


def predict_videos(run_path: str | Path, videos: str | Path, out: str | Path, *, cache: str | None = None,
                   fmt: str = "csv", device: str = "auto", extract: bool = True, jobs: int = 1,
                   source: FeatureSource | None = None, keys: list[str] | None = None, clip: bool = False,
                   log: Callable[[str], None] = print) -> list[Path]:
    """Predict every video under ``videos``; returns the files written under ``out``.

    One file per video at its path under ``out``; a video whose person-aware features bind a
    left and a right person gets one per person (``X_left.csv``, ``X_right.csv``), as Aff-Wild2
    labels them. Values are the model's raw outputs (``clip``: clipped to [-1, 1]). ``csv``
    files carry ``<modality>_present`` columns; ``out/summary.csv`` has one line per file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use {FORMATS}")
    predictor = Predictor.from_run(run_path, cache=cache, source=source, device=device)
    cache_root, fingerprints = predictor.config.cache, predictor.fingerprints
    if keys is None:
        from avpipe.pipeline.discover import iter_video_files

        keys = [f.key for f in iter_video_files(videos)]
    if not keys:
        raise FileNotFoundError(f"no videos under {safe_name(str(videos))}")
    if extract and source is None:
        from avpipe.pipeline.runner import run_extract

        config, stage_names = _pipeline_config(predictor.config, cache_root, fingerprints)
        if stage_names:
            log(f"extracting {', '.join(stage_names)} for {len(keys)} video(s) into {cache_root} with the run's "
                f"stage configs (cached entries reused)")
            summary = run_extract(cache_root, videos, config, stages=stage_names, jobs=jobs)
            if not summary.ok:
                log(summary.render())
    source = predictor.source  # opened after extraction (it sees the new entries), once for the batch
    from avpipe.pipeline.discover import output_path_for

    written: list[Path] = []
    failed: list[str] = []
    summary_rows: list[dict[str, Any]] = []
    ref = next(iter(fingerprints.values()))
    suffix = ".txt" if fmt == "affwild2" else ".csv"
    for key in keys:
        # One video's problem (no features, a bad key) is reported and the batch goes on.
        try:
            output_path_for(out, key, suffix)  # a key that cannot name a file fails here, before any work
            missing = predictor.missing(key)
            if missing:
                raise FeatureError(
                    f"{safe_name(key)}: no cached features for {missing} with the run's fingerprints "
                    f"({', '.join(f'{m}={fingerprints[m][0]}@{fingerprints[m][1][:12]}' for m in missing)}); the "
                    f"extraction failed, or the stage config, code version or weights differ from training")
            for person in predictor.persons(key):
                target = output_path_for(out, key, suffix if person is None else f"_{person}{suffix}")
                pred = predictor.predict(key, person)
                p, present = pred.values, pred.present
                written.append(write_prediction(target, p, fmt, clip=clip, present=present,
                                                 times=_times(source, ref, key, len(p))))
                shown = np.clip(p, -1, 1) if clip else p
                summary_rows.append({"video": key, "person": person or "", "file": target.relative_to(out).as_posix(),
                                     "frames": len(p), "valence_mean": f"{float(np.mean(shown[:, 0])):.6f}",
                                     "arousal_mean": f"{float(np.mean(shown[:, 1])):.6f}",
                                     **{f"{m}_coverage": f"{float(np.mean(v)):.4f}" for m, v in present.items()}})
        except (FeatureError, ValueError) as e:
            failed.append(key)
            log(f"error: {e}")
    if summary_rows:
        write_summary(Path(out) / "summary.csv", summary_rows)
    if failed:
        raise PredictionErrors(failed, written)
    return written
