"""Two numeric bugs: NaN/inf labels are masked like -5 (one NaN must not turn the CCC into NaN),
and the step LR schedule equals its reference formula on every epoch."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.data import TrackRef, load_bank
from avpipe.fusion.labels import LabelTrack, load_labels
from avpipe.fusion.metrics import evaluate
from avpipe.fusion.source import FeatureArrays, MemorySource
from avpipe.fusion.train import LRController


def _bank_with_labels(y: np.ndarray):
    n = len(y)
    rng = np.random.default_rng(0)
    src = MemorySource({("visual", "v.mp4"): FeatureArrays(rng.normal(size=(n, 3)).astype(np.float32),
                                                           np.ones(n, bool))})
    ref = TrackRef("v", "v.mp4", LabelTrack("v", "v", y, "val"))
    return load_bank(src, {"visual": ("visual", "mem")}, [ref])


def test_one_nan_label_is_masked_and_ccc_stays_finite():
    rng = np.random.default_rng(1)
    y = rng.uniform(-1, 1, size=(40, 2)).astype(np.float32)
    y[3] = (np.nan, 0.2)
    y[7] = (0.1, np.inf)
    y[9] = (-5, -5)
    bank = _bank_with_labels(y)
    yv = bank.y_valid.numpy()[:40]
    assert not yv[3] and not yv[7] and not yv[9] and yv.sum() == 37
    assert np.isfinite(bank.y.numpy()).all()  # nothing non-finite reaches a loss (NaN * 0 = NaN)
    labels = bank.y.numpy()[:40]
    pred = np.where(yv[:, None], labels, 0) + rng.normal(scale=0.1, size=(40, 2))
    ev = evaluate({"v": pred}, {"v": labels}, {"v": yv}, smoothing=None)
    assert np.isfinite(ev.overall["mean"]) and ev.overall["mean"] > 0.8


def test_nan_in_a_label_file_warns_once_per_file(tmp_path):
    p = tmp_path / "Train_Set" / "v.txt"
    p.parent.mkdir()
    p.write_text("valence,arousal\n0.1,0.2\nnan,0.3\n0.2,inf\n0.1,0.1\n")
    with pytest.warns(UserWarning, match=r"v\.txt: 2 row\(s\) with NaN/inf values are treated as unlabelled") as rec:
        t = load_labels(tmp_path)[0]
    assert len([w for w in rec if "NaN/inf" in str(w.message)]) == 1
    assert t.valid.tolist() == [True, False, False, True]


def _reference_step_lr(epoch: int, base: float, start: int, every: int, gamma: float) -> float:
    """The authors' schedule as written in their training code: decay by gamma every `every`
    epochs after `start`, counted with floor division."""
    if epoch > start:
        return base * gamma ** ((epoch - start) // every)
    return base


@pytest.mark.parametrize("start,every,gamma", [(5, 2, 0.8), (1, 1, 0.5), (3, 3, 0.9)])
def test_step_schedule_equals_reference_on_every_epoch(start, every, gamma):
    cfg = TrainConfig(lr=1e-3, schedule="step", step_start=start, step_every=every, step_gamma=gamma)
    lrc = LRController(cfg, steps_per_epoch=10)
    for epoch in range(31):
        for step in (0, 9):
            assert lrc.lr_at(epoch, step) == pytest.approx(_reference_step_lr(epoch, 1e-3, start, every, gamma),
                                                           rel=1e-12), (epoch, step)
