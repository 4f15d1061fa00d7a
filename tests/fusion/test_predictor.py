"""Every consumer of a trained run predicts the same numbers: ``predict``'s files, the submission
writer, ``evaluate`` and ``render --run`` against one recomputation from the run's checkpoint that
goes through none of them (model from the checkpoint, the run's fingerprints, ``load_bank``,
training statistics, ``predict_provider``). Pins the numbers across the refactor that gave them
one prediction path (issue #18): exact equality, not a tolerance."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import InMemoryBanks, Stats, TrackRef, load_bank
from avpipe.fusion.inference import build_model_from_checkpoint, predict_provider
from avpipe.fusion.metrics import evaluate
from avpipe.fusion.run import RunDir
from avpipe.fusion.source import CacheSource

KEYS = ["vid0000.mp4", "vid0003.mp4"]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    from avpipe.fusion.train import train
    from tests.fusion.conftest import small_config

    out = tmp_path_factory.mktemp("predictor") / "run"
    train(small_config(corpus, "jca", out, epochs=1), log=lambda m: None)
    return out


def _recompute(run: Path, cache: Path, refs: list[TrackRef], fps=None, tolerance: int | None = None):
    """The run's predictions from its parts, by hand."""
    rd = RunDir(run)
    cfg = TrainConfig.load_run_config(rd.config)
    ck = rd.load_checkpoint("best")
    model = build_model_from_checkpoint(ck, "cpu")
    fps = fps or {m: (d["stage"], d["fingerprint"]) for m, d in cfg.resolved_features.items()}
    kw = {} if tolerance is None else {"tolerance": tolerance}
    bank = load_bank(CacheSource(cache), fps, refs, device="cpu", dtype=cfg.feature_dtype, **kw)
    bank.set_stats(Stats.from_dict(ck["stats"]))
    return predict_provider(model, InMemoryBanks(bank), ck["window"], int(cfg.eval_hop or cfg.hop),
                            int(cfg.batch_size or 32) * 2)


def test_predict_files_are_the_runs_predictions(run, corpus, tmp_path):
    from avpipe.fusion.predict import predict_videos

    files = predict_videos(run, tmp_path, tmp_path / "out", source=CacheSource(corpus["cache"]), keys=KEYS,
                           extract=False, device="cpu", log=lambda m: None)
    expect, _, _ = _recompute(run, corpus["cache"], [TrackRef(k, k, None) for k in KEYS])
    assert len(files) == len(KEYS)
    for f, k in zip(files, KEYS):
        rows = list(csv.DictReader(f.open()))
        assert [(r["valence"], r["arousal"]) for r in rows] == [(f"{v:.6f}", f"{a:.6f}") for v, a in expect[k]]
        assert {"visual_present", "audio_present"} <= set(rows[0])  # jca: the face and the voice


def test_submission_predictions_are_the_runs_predictions(run, corpus):
    from avpipe.fusion.submission import run_predictor

    predict = run_predictor(run, KEYS, cache=str(corpus["cache"]), device="cpu")
    expect, _, _ = _recompute(run, corpus["cache"], [TrackRef("vid0003", "vid0003.mp4", None)])
    got = predict("vid0003")
    assert got.dtype == expect["vid0003"].dtype and np.array_equal(got, expect["vid0003"])
    with pytest.raises(LookupError, match="no video named"):
        predict("vid0042")


def test_evaluate_scores_the_runs_predictions(run, corpus):
    from avpipe.fusion.predict import evaluate_run

    ev = evaluate_run(run, device="cpu")
    rd = RunDir(run)
    cfg = TrainConfig.load_run_config(rd.config)
    from avpipe.fusion.labels import assign_splits, load_labels, match_videos

    tracks = assign_splits(load_labels(cfg.labels, cfg.clip_labels), cfg.split_file, cfg.val_fraction, cfg.seed)
    keymap = match_videos(tracks, [k for k, _ in CacheSource(corpus["cache"]).videos()])
    val = [TrackRef(t.name, keymap[t.name], t) for t in tracks if t.name in keymap and t.split == "val"]
    assert val
    fps = {m: (d["stage"], d["fingerprint"]) for m, d in cfg.resolved_features.items()}
    preds, labels, valid = _recompute(run, corpus["cache"], val, fps, cfg.label_tolerance)
    expect = evaluate(preds, labels, valid, cfg.smoothing)
    assert ev.overall == expect.overall and ev.per_video == expect.per_video and ev.n_frames == expect.n_frames
    assert (run / "eval" / "metrics.json").is_file()


def test_render_traces_are_the_runs_predictions(run, corpus):
    from avpipe.render import CachedVideo, attach_run

    src = CacheSource(corpus["cache"])
    cid = src.content_id("vid0000.mp4")
    expect, _, _ = _recompute(run, corpus["cache"], [TrackRef("vid0000.mp4", cid, None)])
    n = len(expect["vid0000.mp4"])
    cv = CachedVideo(key="vid0000.mp4", content_id=cid, path=Path("vid0000.mp4"), times=np.arange(n) / 30.0,
                     fps=30.0, size=(64, 64))
    attach_run(cv, run, corpus["cache"])
    assert np.array_equal(cv.va_pred, np.asarray(expect["vid0000.mp4"], np.float64))


def test_the_predictor_gives_each_video_and_person_its_predictions(run, corpus, tmp_path):
    from avpipe.fusion.predictor import Predictor
    from avpipe.fusion.run import RunConflictError

    p = Predictor.from_run(run, cache=corpus["cache"], device="cpu")
    assert p.missing("vid0000.mp4") == [] and p.persons("vid0000.mp4") == [None]
    pred = p.predict("vid0000.mp4")
    expect, _, _ = _recompute(run, corpus["cache"], [TrackRef("vid0000.mp4", "vid0000.mp4", None)])
    assert pred.name == "vid0000.mp4" and np.array_equal(pred.values, expect["vid0000.mp4"])
    assert set(pred.present) == set(p.fingerprints) == {"visual", "audio"}
    assert all(v.dtype == bool and len(v) == len(pred.values) for v in pred.present.values())
    assert p.predict("vid0000.mp4", name="x").name == "x"
    with pytest.raises(RunConflictError, match="not a run folder"):
        Predictor.from_run(tmp_path, device="cpu")
