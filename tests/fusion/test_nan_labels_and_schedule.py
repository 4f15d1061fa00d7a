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
from avpipe.fusion.schedule import LRSchedule


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


def _schedule(steps_per_epoch=10, **kw):
    import torch

    cfg = TrainConfig(lr=1e-3, **kw)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    return LRSchedule(cfg, opt, steps_per_epoch), opt


def _run_epoch(lrs, opt, n_batches):
    used = []
    for _ in range(n_batches):
        used.append(lrs.lr)
        opt.step()
        lrs.after_batch()
    return used


@pytest.mark.parametrize("start,every,gamma", [(5, 2, 0.8), (1, 1, 0.5), (3, 3, 0.9)])
def test_step_schedule_equals_reference_on_every_epoch(start, every, gamma):
    lrs, opt = _schedule(schedule="step", step_start=start, step_every=every, step_gamma=gamma)
    for epoch in range(31):
        used = _run_epoch(lrs, opt, 3)
        assert used == pytest.approx([_reference_step_lr(epoch, 1e-3, start, every, gamma)] * 3, rel=1e-12), epoch
        lrs.end_epoch(epoch, 0.5)


def _reference_plateau(scores, base, factor, patience, min_lr):
    """Written from the definition: reduce after more than `patience` epochs without a gain > 1e-4."""
    lr, best, bad, out = base, -float("inf"), 0, []
    for s in scores:
        out.append(lr)
        if s > best + 1e-4:
            best, bad = s, 0
        else:
            bad += 1
            if bad > patience:
                lr, bad = max(min_lr, lr * factor), 0
    return out


def test_plateau_and_warmup_schedules_and_resume():
    rng = np.random.default_rng(3)
    scores = np.concatenate([np.linspace(0, 0.5, 6), 0.5 - rng.random(30) * 0.1]).tolist()
    lrs, opt = _schedule(schedule="plateau", plateau_patience=2, plateau_factor=0.5, min_lr=1e-4)
    got = []
    for e, s in enumerate(scores):
        got.append(_run_epoch(lrs, opt, 2)[-1])
        lrs.end_epoch(e, s)
    assert got == pytest.approx(_reference_plateau(scores, 1e-3, 0.5, 2, 1e-4), rel=1e-12)
    assert min(got) == pytest.approx(1e-4)
    lrs, opt = _schedule(schedule="warmup_plateau", warmup_epochs=2, steps_per_epoch=4, plateau_patience=1,
                         plateau_factor=0.1)
    used = _run_epoch(lrs, opt, 4)
    lrs.end_epoch(0, 0.1)
    used += _run_epoch(lrs, opt, 4)
    lrs.end_epoch(1, 0.2)
    assert used == pytest.approx([1e-3 * (i + 1) / 8 for i in range(8)], rel=1e-12)
    assert lrs.lr == pytest.approx(1e-3)
    # resume: a schedule rebuilt from the saved states continues identically
    state, opt_state = lrs.state_dict(), opt.state_dict()
    lrs2, opt2 = _schedule(schedule="warmup_plateau", warmup_epochs=2, steps_per_epoch=4, plateau_patience=1,
                           plateau_factor=0.1)
    opt2.load_state_dict(opt_state)
    lrs2.load_state_dict(state)
    for e, s in enumerate((0.3, 0.3, 0.3, 0.3, 0.3), start=2):
        a, b = _run_epoch(lrs, opt, 2), _run_epoch(lrs2, opt2, 2)
        assert a == b
        lrs.end_epoch(e, s)
        lrs2.end_epoch(e, s)
    assert lrs.lr == pytest.approx(1e-5)


def test_schedule_state_loads_with_weights_only(tmp_path):
    import torch

    lrs, _ = _schedule(schedule="warmup_plateau", warmup_epochs=1)
    torch.save({"lr_state": lrs.state_dict()}, tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=True)["lr_state"]["kind"] == "warmup_plateau"
