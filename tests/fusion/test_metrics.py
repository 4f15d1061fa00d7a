"""CCC against the direct formula; -5 frames never reach loss or metric; smoothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avpipe.fusion.metrics import ccc, ccc_loss, compute_loss, evaluate, masked_ccc, polar_loss, smooth_predictions


def direct_ccc(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / len(x)
    sx = sum((a - mx) ** 2 for a in x) / len(x)
    sy = sum((b - my) ** 2 for b in y) / len(y)
    return 2 * sxy / (sx + sy + (mx - my) ** 2)


def test_ccc_known_values():
    x = [1.0, 2.0, 3.0, 4.0]
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, [-v for v in x]) == pytest.approx(-2 * 1.25 / (1.25 + 1.25 + 25))
    y = [2.0, 3.0, 4.0, 5.0]  # shifted by 1: 2·1.25 / (1.25 + 1.25 + 1)
    assert ccc(x, y) == pytest.approx(2.5 / 3.5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50) * 0.5 + 0.3
    assert ccc(a, b) == pytest.approx(direct_ccc(a, b), rel=1e-9)


def test_torch_ccc_matches_numpy_on_masked_frames():
    rng = np.random.default_rng(1)
    p, y = rng.normal(size=(4, 10, 2)), rng.normal(size=(4, 10, 2))
    m = rng.random((4, 10)) > 0.3
    got = masked_ccc(torch.tensor(p), torch.tensor(y), torch.tensor(m)).numpy()
    for d in range(2):
        assert got[d] == pytest.approx(direct_ccc(p[..., d][m], y[..., d][m]), abs=1e-5)
    loss = ccc_loss(torch.tensor(p), torch.tensor(y), torch.tensor(m))
    assert float(loss) == pytest.approx(2 - got.sum(), abs=1e-5)


@pytest.mark.parametrize("loss", ["ccc", "ccc_window", "mse"])
def test_unlabelled_frames_never_reach_the_loss(loss):
    rng = np.random.default_rng(2)
    p = torch.tensor(rng.normal(size=(3, 8, 2)), requires_grad=True)
    y = torch.tensor(rng.uniform(-1, 1, size=(3, 8, 2)))
    m = torch.ones(3, 8, dtype=torch.bool)
    m[:, ::3] = False
    y2 = y.clone()
    y2[~m] = -5.0  # what the label files hold there
    p2 = p.detach().clone()
    p2[~m] = 123.0
    p2.requires_grad_(True)
    l1 = compute_loss(loss, p, y, m, {"polar": 0.1})
    l2 = compute_loss(loss, p2, y2, m, {"polar": 0.1})
    assert float(l1.detach()) == pytest.approx(float(l2.detach()), abs=1e-9)
    l2.backward()
    assert torch.all(p2.grad[~m] == 0)


def test_unlabelled_frames_never_reach_the_metric():
    rng = np.random.default_rng(3)
    y = rng.uniform(-1, 1, size=(100, 2))
    p = y + rng.normal(scale=0.2, size=y.shape)
    valid = rng.random(100) > 0.2
    y_bad, p_bad = y.copy(), p.copy()
    y_bad[~valid] = -5
    p_bad[~valid] = 0.0
    r1 = evaluate({"v": p}, {"v": y}, {"v": valid}, smoothing=None)
    r2 = evaluate({"v": p_bad}, {"v": y_bad}, {"v": valid}, smoothing=None)
    assert r1.overall == r2.overall
    assert r1.overall["valence"] == pytest.approx(direct_ccc(p[valid, 0], y[valid, 0]))


def test_official_ccc_concatenates_videos():
    rng = np.random.default_rng(4)
    ys = {k: rng.uniform(-1, 1, size=(n, 2)) for k, n in (("a", 40), ("b", 70))}
    ps = {k: v * 0.5 + 0.1 for k, v in ys.items()}
    val = {k: np.ones(len(v), bool) for k, v in ys.items()}
    r = evaluate(ps, ys, val, smoothing=(20, 50))
    cat_p, cat_y = np.concatenate([ps["a"], ps["b"]]), np.concatenate([ys["a"], ys["b"]])
    assert r.overall["arousal"] == pytest.approx(direct_ccc(cat_p[:, 1], cat_y[:, 1]))
    assert r.per_video["a"]["valence"] == pytest.approx(direct_ccc(ps["a"][:, 0], ys["a"][:, 0]))
    assert r.overall_smoothed is not None and r.n_frames == 110


def test_smoothing_clips_and_averages():
    p = np.zeros((100, 2))
    p[50] = [5.0, 5.0]  # clipped to 1 first
    s = smooth_predictions(p, (20, 50))
    assert s[50, 0] == pytest.approx(1 / 20) and s[50, 1] == pytest.approx(1 / 50)
    assert s.sum(0) == pytest.approx([1.0, 1.0])
    assert smooth_predictions(np.ones((5, 2)), (20, 50)).shape == (5, 2)


def test_polar_loss_is_wrap_free():
    y = torch.tensor([[[-0.5, 1e-6]]])
    p1, p2 = torch.tensor([[[-0.5, 1e-3]]]), torch.tensor([[[-0.5, -1e-3]]])
    m = torch.ones(1, 1, dtype=torch.bool)
    assert float(polar_loss(p1, y, m)) < 1e-5 and float(polar_loss(p2, y, m)) < 1e-5


def test_official_ccc_against_torchmetrics():
    """An independent implementation (torchmetrics) of Lin's CCC. torchmetrics uses sample (n-1)
    moments: equal to ours exactly when the two means are equal, and to O(1/n) otherwise."""
    import torch
    from torchmetrics.functional import concordance_corrcoef

    from avpipe.fusion.metrics import ccc, evaluate

    rng = np.random.default_rng(7)
    for n in (50, 2000):
        y = rng.uniform(-1, 1, n)
        x = 0.6 * y + rng.normal(scale=0.4, size=n)
        x_same_mean = x - x.mean() + y.mean()
        tm = float(concordance_corrcoef(torch.from_numpy(x_same_mean), torch.from_numpy(y)))
        assert ccc(x_same_mean, y) == pytest.approx(tm, abs=1e-12)
        tm = float(concordance_corrcoef(torch.from_numpy(x + 0.3), torch.from_numpy(y)))
        assert ccc(x + 0.3, y) == pytest.approx(tm, abs=2.0 / n)
    # the official score concatenates the valid frames of every video before computing moments
    preds, labels, valid = {}, {}, {}
    for i, n in enumerate((300, 500, 200)):
        y = rng.uniform(-1, 1, (n, 2))
        labels[f"v{i}"], preds[f"v{i}"] = y, 0.7 * y + rng.normal(scale=0.3, size=(n, 2))
        valid[f"v{i}"] = rng.random(n) > 0.2
    ev = evaluate(preds, labels, valid, smoothing=None)
    P = np.concatenate([preds[k][valid[k]] for k in preds])
    Y = np.concatenate([labels[k][valid[k]] for k in preds])
    tm = concordance_corrcoef(torch.from_numpy(P), torch.from_numpy(Y)).numpy()
    assert [ev.overall["valence"], ev.overall["arousal"]] == pytest.approx(tm.tolist(), abs=2.0 / len(Y))
    P = P - P.mean(0) + Y.mean(0)  # equal means: the two definitions coincide exactly
    tm = concordance_corrcoef(torch.from_numpy(P), torch.from_numpy(Y)).numpy()
    ev2 = evaluate({"all": P}, {"all": Y}, {"all": np.ones(len(Y), bool)}, smoothing=None)
    assert [ev2.overall["valence"], ev2.overall["arousal"]] == pytest.approx(tm.tolist(), abs=1e-12)
    assert ev.n_frames == len(Y)
