"""Losses (torch) and evaluation metrics (numpy) for valence/arousal regression.

Conventions (docs/models.md#conventions):

* **Official CCC** — Lin's concordance correlation with *population* moments, per dimension, over
  all valid frames of all evaluated videos concatenated (not averaged per video).
* **Loss** — masked ``1 - CCC`` per dimension, summed over V and A, over the flattened batch
  (JCA/RJA style; tracks the official metric better than per-window CCC for short windows).
  ``ccc_window`` (RJCMA style: per window, then batch mean) and ``mse`` are options. The Praveen
  code uses unbiased ``std`` in the loss; we use population moments everywhere so the loss is
  exactly ``1 - metric`` on the batch (the difference is a factor (n-1)/n, negligible at B·T ≥ 100).
* **Masking** — frames labelled ``-5`` never reach loss or metric: every function here takes the
  label mask and drops those frames *before* any moment is computed (the Praveen val.py bug of
  scoring unlabelled frames as (0, 0) is deliberately not reproduced).
* **Smoothing** (docs/models.md#smoothing, evaluation only) — per video, clip to [-1, 1], centred moving average of 20
  frames (valence) / 50 frames (arousal), zero-padded borders; reported next to the raw numbers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DIMS = ("valence", "arousal")
DEFAULT_SMOOTHING = (20, 50)


# --------------------------------------------------------------------------- numpy metrics
def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation coefficient of two 1-D arrays (population moments).

    Returns NaN for fewer than two values; 0 when both are constant and unequal (denominator > 0,
    covariance 0); 1 when both are the same constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"ccc: shapes differ {x.shape} vs {y.shape}")
    if x.size < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = ((x - mx) * (y - my)).mean()
    den = vx + vy + (mx - my) ** 2
    if den == 0:
        return 1.0
    return float(2 * cov / den)


def smooth_predictions(pred: np.ndarray, widths: Sequence[int] = DEFAULT_SMOOTHING) -> np.ndarray:
    """Clip to [-1, 1] and apply a centred moving average per dimension (zero-padded borders).

    ``pred`` is one video's ``(n, 2)`` predictions over *all* its frames (labelled or not), so the
    filter sees a contiguous signal; masking happens afterwards in the metric.
    """
    pred = np.clip(np.asarray(pred, dtype=np.float64), -1.0, 1.0)
    out = np.empty_like(pred)
    for d in range(pred.shape[1]):
        w = int(widths[d]) if d < len(widths) else 1
        if w <= 1 or pred.shape[0] == 0:
            out[:, d] = pred[:, d]
            continue
        out[:, d] = np.convolve(pred[:, d], np.ones(w) / w, mode="same")[: pred.shape[0]] \
            if pred.shape[0] >= w else _short_filter(pred[:, d], w)
    return out


def _short_filter(x: np.ndarray, w: int) -> np.ndarray:
    # np.convolve 'same' returns max(len(x), w) values when w > len(x); centre it explicitly.
    full = np.convolve(x, np.ones(w) / w, mode="full")
    start = (w - 1) // 2
    return full[start: start + len(x)]


@dataclass
class EvalResult:
    """Official + per-video CCC, raw and (optionally) smoothed."""

    overall: dict[str, float]
    overall_smoothed: dict[str, float] | None
    per_video: dict[str, dict[str, float]] = field(default_factory=dict)
    n_frames: int = 0

    def summary(self) -> dict[str, float]:
        out = {f"ccc_{k}": v for k, v in self.overall.items()}
        if self.overall_smoothed:
            out.update({f"ccc_{k}_smoothed": v for k, v in self.overall_smoothed.items()})
        out["n_frames"] = self.n_frames
        return out


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    v, a = ccc(p[:, 0], y[:, 0]), ccc(p[:, 1], y[:, 1])
    return {"valence": v, "arousal": a, "mean": (v + a) / 2}


def evaluate(preds: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
             valid: Mapping[str, np.ndarray],
             smoothing: Sequence[int] | None = DEFAULT_SMOOTHING) -> EvalResult:
    """Official CCC over the concatenation of valid frames of every video in ``preds``.

    ``preds[v]``/``labels[v]``: ``(n_v, 2)``; ``valid[v]``: ``(n_v,)`` bool.
    """
    ps, ys, pss = [], [], []
    per: dict[str, dict[str, float]] = {}
    for name in preds:
        p, y, m = np.asarray(preds[name]), np.asarray(labels[name]), np.asarray(valid[name], bool)
        if p.shape != y.shape or p.shape[0] != m.shape[0]:
            raise ValueError(f"evaluate: {name}: shapes {p.shape}, {y.shape}, {m.shape}")
        ps.append(p[m]); ys.append(y[m])
        row = _scores(p[m], y[m])
        if smoothing:
            s = smooth_predictions(p, smoothing)[m]
            pss.append(s)
            row.update({f"{k}_smoothed": v for k, v in _scores(s, y[m]).items()})
        row["n_frames"] = int(m.sum())
        per[name] = row
    P = np.concatenate(ps) if ps else np.zeros((0, 2))
    Y = np.concatenate(ys) if ys else np.zeros((0, 2))
    overall = _scores(P, Y)
    sm = _scores(np.concatenate(pss), Y) if smoothing and pss else None
    return EvalResult(overall=overall, overall_smoothed=sm, per_video=per, n_frames=int(len(Y)))


# --------------------------------------------------------------------------- torch losses
def masked_ccc(pred, target, mask, dim_axis: int = -1):
    """Per-dimension CCC over all masked-in frames of the batch (flattened): returns ``(C,)``.

    ``pred``/``target``: ``(..., C)``; ``mask``: ``(...)`` bool. Computed in float32 whatever the
    autocast dtype, because moments of ~10^5 fp16 values lose the signal.
    """
    p = pred.float().reshape(-1, pred.shape[-1])
    t = target.float().reshape(-1, target.shape[-1])
    m = mask.reshape(-1).to(p.dtype).unsqueeze(-1)
    n = m.sum().clamp_min(1.0)
    mp, mt = (p * m).sum(0) / n, (t * m).sum(0) / n
    dp, dt = (p - mp) * m, (t - mt) * m
    vp, vt = (dp * dp).sum(0) / n, (dt * dt).sum(0) / n
    cov = (dp * dt).sum(0) / n
    return 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)


def ccc_loss(pred, target, mask, per_window: bool = False):
    """Masked ``sum_d (1 - CCC_d)``. ``per_window``: CCC along time per window, mean over windows
    that have at least two labelled frames (RJCMA style)."""
    if not per_window:
        return (1 - masked_ccc(pred, target, mask)).sum()
    p, t, m = pred.float(), target.float(), mask.float().unsqueeze(-1)
    n = m.sum(1).clamp_min(1.0)  # (B, 1)
    mp, mt = (p * m).sum(1) / n, (t * m).sum(1) / n  # (B, C)
    dp, dt = (p - mp[:, None]) * m, (t - mt[:, None]) * m
    vp, vt, cov = (dp * dp).sum(1) / n, (dt * dt).sum(1) / n, (dp * dt).sum(1) / n
    c = 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)  # (B, C)
    ok = (mask.sum(1) >= 2).float().unsqueeze(-1)
    return ((1 - c) * ok).sum(0).div(ok.sum().clamp_min(1.0)).sum()


def masked_mse(pred, target, mask):
    """Mean squared error over masked-in frames, summed over the two dimensions."""
    m = mask.float().unsqueeze(-1)
    return (((pred.float() - target.float()) ** 2) * m).sum() / m.sum().clamp_min(1.0)


def polar_loss(pred, target, mask, eps: float = 1e-3):
    """Wrap-free polar auxiliary loss (MAVEN's circumplex idea without the atan2 discontinuity).

    Angle term ``1 - cos(θ_pred - θ_true)`` computed from unit vectors (no ±π jump where valence
    < 0 and arousal ≈ 0), intensity term ``(I_pred - I_true)^2``. Frames with ``I_true < eps`` have no
    defined angle and contribute only the intensity term.
    """
    p, t = pred.float(), target.float()
    ip, it = p.norm(dim=-1), t.norm(dim=-1)
    cos = (p * t).sum(-1) / (ip.clamp_min(eps) * it.clamp_min(eps))
    m = mask.float()
    ang_m = m * (it >= eps).float()
    ang = ((1 - cos) * ang_m).sum() / ang_m.sum().clamp_min(1.0)
    inten = (((ip - it) ** 2) * m).sum() / m.sum().clamp_min(1.0)
    return ang + inten


def compute_loss(name: str, pred, target, mask, aux: Mapping[str, float] | None = None):
    """The training loss by name (``ccc`` | ``ccc_window`` | ``mse``, or an authors' formula of
    :data:`avpipe.fusion.recipes.RECIPE_LOSSES`) plus weighted auxiliaries."""
    if name == "ccc":
        loss = ccc_loss(pred, target, mask)
    elif name == "ccc_window":
        loss = ccc_loss(pred, target, mask, per_window=True)
    elif name == "mse":
        loss = masked_mse(pred, target, mask)
    else:
        from avpipe.fusion.recipes import RECIPE_LOSSES  # the authors' exact formulas

        if name not in RECIPE_LOSSES:
            raise ValueError(f"unknown loss {name!r}; use ccc, ccc_window, mse or {', '.join(RECIPE_LOSSES)}")
        loss = RECIPE_LOSSES[name](pred, target, mask)
    for k, w in (aux or {}).items():
        if not w:
            continue
        if k == "polar":
            loss = loss + w * polar_loss(pred, target, mask)
        elif k == "mse":
            loss = loss + w * masked_mse(pred, target, mask)
        else:
            raise ValueError(f"unknown auxiliary loss {k!r}")
    return loss
