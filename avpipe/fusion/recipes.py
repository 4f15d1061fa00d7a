"""Training recipes: how each published model is trained, by name.

Why a module of its own: a published model's plain name (``jca``, ``rja``, ``dca``, ``rjcma``,
``maven``) trains **the way its authors' released code trains** (recipe ``authors``, the default):
window enumeration, batch order, learning rate of every epoch and step, scheduler and what it
monitors, initialisation, loss formula, model selection, input normalisation, ``drop_last``.
avpipe's own choices (z-scored inputs, gradient clipping, early stopping, per-epoch shuffle, the
batch-flattened official CCC loss) stay available as recipe ``avpipe``, described as avpipe's.
Every item, with the authors' file and line and whether avpipe equals it or deviates (and why), is
in docs/recipes.md; :data:`RECIPES` is what the trainer reads, so the two are kept side by side.

A recipe is a set of :class:`~avpipe.fusion.config.TrainConfig` defaults (options left unset take
them), plus model options it fixes; everything is recorded in the run's ``config.json``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

RECIPE_NAMES = ("authors", "avpipe")

#: the TrainConfig values recipe ``avpipe`` resolves to when a model does not set them: what every
#: model trained with before recipes existed (a run recorded without a recipe used exactly these)
AVPIPE_RECIPE: dict[str, Any] = {"windows": "hop", "shuffle": "epoch", "drop_last": False, "loss": "ccc",
                                 "selection": "ccc_mean", "input_norm": "zscore", "init": "avpipe",
                                 "grad_clip": 1.0}


@dataclass(frozen=True)
class Recipe:
    """The authors' training recipe of one published name.

    ``train``: TrainConfig defaults (over the model's own ``train_defaults``); ``model``: model
    options the recipe fixes (merged under the user's ``--model-option``); ``source``: the
    repository and commit the recipe is read from."""

    name: str
    source: str
    train: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)


_PRAVEEN_AV = {"windows": "clip_phases", "window": 512, "clip_len": 32, "shuffle": "none", "drop_last": False,
               "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0, "schedule": "praveen_av",
               "step_start": 5, "step_every": 2, "step_gamma": 0.8, "step_peak_lr": 1e-3, "grad_clip": 0.0,
               "loss": "ccc_praveen", "selection": "ccc_smoothed_sum", "smoothing": [20, 50],
               "input_norm": "none", "init": "praveen_av"}

_MAVEN = {"windows": "hop", "clip_len": 1, "shuffle": "epoch", "drop_last": False, "batch_size": 6,
          "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "schedule": "plateau_loss", "plateau_patience": 5,
          "plateau_factor": 0.1, "epochs": 50, "patience": 50, "grad_clip": 1.0, "loss": "mse_mean",
          "selection": "val_loss", "input_norm": "none", "init": "avpipe"}
_MAVEN_MODEL = {"enc_heads": 12, "ff": 3072, "enc_dropout": 0.0, "input_standardise": True, "input_noise": 0.01}

RECIPES: dict[str, Recipe] = {
    "jca": Recipe("jca", "praveena2j/JointCrossAttentional-AV-Fusion @ 84c95b2", {
        "windows": "clip_phases", "window": 256, "clip_len": 32, "shuffle": "epoch", "drop_last": True,
        "batch_size": 96, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
        "step_start": 5, "step_every": 2, "step_gamma": 0.8, "epochs": 30, "patience": 30, "grad_clip": 0.0,
        "loss": "ccc_jca", "selection": "ccc_mean", "input_norm": "none", "init": "pytorch"}),
    "rja": Recipe("rja", "praveena2j/RecurrentJointAttentionwithLSTMs @ ea196b3",
                  {**_PRAVEEN_AV, "lr": 1e-4, "epochs": 50, "patience": 50}),
    "dca": Recipe("dca", "praveena2j/Dynamic-CrossAttention @ 7374796",
                  {**_PRAVEEN_AV, "optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-5, "epochs": 100,
                   "patience": 100}),
    "rjcma": Recipe("rjcma", "praveena2j/RJCMA @ 489f33d", {
        "windows": "hop", "window": 300, "hop": 200, "clip_len": 1, "shuffle": "once", "drop_last": False,
        "batch_size": 12, "optimizer": "adam", "lr": 1e-5, "weight_decay": 1e-3, "schedule": "rjcma_warmup",
        "warmup_epochs": 5, "plateau_patience": 5, "plateau_factor": 0.1, "epochs": 100, "patience": 100,
        "grad_clip": 0.0, "loss": "ccc_rjcma", "selection": "ccc_rjcma", "input_norm": "text_scalar",
        "init": "pytorch"}),
    # one sequence per transcript segment (avpipe.fusion.segments): ``window`` caps a segment's
    # piece (Whisper's segments last at most 30 s = 900 frames at the authors' 30 fps)
    "maven": Recipe("maven", "Vrushank-Ahire/MAVEN_8th_ABAW @ e053894", {**_MAVEN, "window": 900, "hop": 900},
                    model=dict(_MAVEN_MODEL)),
}

#: recipes an avpipe variant trains with only when asked (``--recipe authors``), never by default:
#: the authors' recipe applied to avpipe's model. ``maven-frames`` keeps what ``maven`` trained
#: with before segment tokens (fixed 300-frame windows every 200 frames), so its old runs resume.
ON_REQUEST: dict[str, Recipe] = {
    "maven-frames": Recipe("maven-frames", "Vrushank-Ahire/MAVEN_8th_ABAW @ e053894 (on avpipe's per-frame model)",
                           {**_MAVEN, "window": 300, "hop": 200}, model=dict(_MAVEN_MODEL)),
}


def default_recipe(fusion: str) -> str:
    """``authors`` for a published name with a released recipe, else ``avpipe``."""
    return "authors" if fusion in RECIPES else "avpipe"


def recipe_defaults(fusion: str, recipe: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig defaults, model options) of ``fusion`` under ``recipe`` (over the model's own
    ``train_defaults`` for ``authors``, from :data:`RECIPES` or, asked for, :data:`ON_REQUEST`;
    :data:`AVPIPE_RECIPE` for ``avpipe``)."""
    if recipe not in RECIPE_NAMES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPE_NAMES)}")
    if recipe == "avpipe":
        return dict(AVPIPE_RECIPE), {}
    r = RECIPES.get(fusion) or ON_REQUEST.get(fusion)
    if r is None:
        raise ValueError(f"model {fusion!r} has no authors' recipe (only {', '.join((*RECIPES, *ON_REQUEST))} do: "
                         f"the others are avpipe's own models or variants); use --recipe avpipe")
    return {**AVPIPE_RECIPE, **r.train}, dict(r.model)


# ----------------------------------------------------------------------------- learning rates
def praveen_av_lr(epoch: int, lr: float, peak: float, start: int = 5, every: int = 2, gamma: float = 0.8) -> float:
    """The RJA/DCA code's lr of ``epoch``: its ``set_lr`` runs only once epoch > ``start``, so the
    config lr holds for epochs 0 … start, then ``peak · gamma^⌊(epoch − start)/every⌋``."""
    return lr if epoch <= start else peak * gamma ** ((epoch - start) // every)


def rjcma_warmup_lr(step: int, steps_per_epoch: int, rel_epoch: int, lr: float, warmup: int = 5) -> float:
    """RJCMA's warm-up lr before training step ``step`` (0-based, restarting every epoch) of epoch
    ``rel_epoch`` since the optimiser was built: ``step · lr · (rel_epoch + 1) / (warmup² · M)``, a
    per-epoch sawtooth whose peak is lr/5 (the code's scheduler uses the batch index, not the global
    step); ``lr`` from epoch ``warmup`` on."""
    if rel_epoch >= warmup:
        return lr
    return step * lr * (rel_epoch + 1) / (warmup * warmup * max(1, steps_per_epoch))


# ----------------------------------------------------------------------------- losses
def _f(x: torch.Tensor) -> torch.Tensor:
    """float32 at least (moments of fp16 values lose the signal), float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _moments(p: torch.Tensor, t: torch.Tensor, m: torch.Tensor, dim: int):
    n = m.sum(dim)
    mp, mt = (p * m).sum(dim) / n.clamp_min(1), (t * m).sum(dim) / n.clamp_min(1)
    dp, dt = (p - mp.unsqueeze(dim)) * m, (t - mt.unsqueeze(dim)) * m
    return n, mp, mt, dp, dt


def ccc_loss_praveen(pred, target, mask, denominator_eps: bool):
    """The JCA/RJA/DCA code's loss, per dimension over the flattened batch, summed over V and A:
    ρ = Σ dp·dt / (√Σdp² · √Σdt² + 1e-8), s = unbiased std,
    L = 1 − 2ρ s_p s_t / (s_p² + s_t² + (p̄ − t̄)² [+ 1e-8 with ``denominator_eps``, JCA only]).
    Frames outside ``mask`` are left out (the authors' training labels are valid by construction)."""
    p = _f(pred).reshape(-1, pred.shape[-1])
    t = _f(target).reshape(-1, target.shape[-1]).to(p.dtype)
    m = mask.reshape(-1, 1).to(p.dtype)
    n, mp, mt, dp, dt = _moments(p, t, m, 0)
    rho = (dp * dt).sum(0) / ((dp * dp).sum(0).sqrt() * (dt * dt).sum(0).sqrt() + 1e-8)
    nu = (n - 1).clamp_min(1)
    sp, st = ((dp * dp).sum(0) / nu).sqrt(), ((dt * dt).sum(0) / nu).sqrt()
    den = sp * sp + st * st + (mp - mt) ** 2 + (1e-8 if denominator_eps else 0.0)
    return (1 - 2 * rho * sp * st / den).sum()


def ccc_loss_rjcma(pred, target, mask):
    """RJCMA's loss: per window along time, unbiased variances, biased covariance,
    L = mean over windows of 1 − 2·cov / (v_t + v_p + (t̄ − p̄)²), summed over V and A. Windows with
    fewer than two labelled frames are left out (the code trains padded frames towards 0 instead)."""
    p = _f(pred)
    t, m = target.to(p.dtype), mask.to(p.dtype).unsqueeze(-1)
    n, mp, mt, dp, dt = _moments(p, t, m, 1)
    nu = (n - 1).clamp_min(1)
    c = 2 * (dp * dt).sum(1) / n.clamp_min(1) / ((dp * dp).sum(1) / nu + (dt * dt).sum(1) / nu + (mp - mt) ** 2
                                                 + 1e-12)
    ok = (n >= 2).float()
    return ((1 - c) * ok).sum(0).div(ok.sum(0).clamp_min(1.0)).sum()


def mse_mean(pred, target, mask):
    """MAVEN's MSE: the mean over every masked-in (frame, dimension) value (``nn.MSELoss`` over the
    two outputs), i.e. half avpipe's per-frame sum over V and A."""
    p = _f(pred)
    m = mask.to(p.dtype).unsqueeze(-1).expand_as(p)
    return (((p - target.to(p.dtype)) ** 2) * m).sum() / m.sum().clamp_min(1.0)


RECIPE_LOSSES = {"ccc_jca": lambda p, t, m: ccc_loss_praveen(p, t, m, True),
                 "ccc_praveen": lambda p, t, m: ccc_loss_praveen(p, t, m, False),
                 "ccc_rjcma": ccc_loss_rjcma, "mse_mean": mse_mean}


# ----------------------------------------------------------------------------- selection
def ccc_unbiased_var(x: np.ndarray, y: np.ndarray) -> float:
    """RJCMA's validation CCC: biased covariance, unbiased variances (its logger's formula)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size < 2:
        return float("nan")
    cov = ((x - x.mean()) * (y - y.mean())).mean()
    return float(2 * cov / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2 + 1e-50))


def concat_valid(preds: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 valid: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ps = [np.asarray(preds[k])[np.asarray(valid[k], bool)] for k in preds]
    ys = [np.asarray(labels[k])[np.asarray(valid[k], bool)] for k in preds]
    return (np.concatenate(ps) if ps else np.zeros((0, 2))), (np.concatenate(ys) if ys else np.zeros((0, 2)))


def maven_val_loss(p: np.ndarray, y: np.ndarray) -> float:
    """MAVEN's loss value on validation frames: MSE (mean over frames and both outputs) +
    0.1 · (1 − mean CCC), CCC with unbiased variances + 1e-8 and biased covariance (the term has no
    gradient in training but is part of the value the code's selection and plateau monitor)."""
    if not len(y):
        return float("nan")
    mse = float(((p - y) ** 2).mean())
    c = []
    for d in range(2):
        a, b = p[:, d], y[:, d]
        cov = ((a - a.mean()) * (b - b.mean())).mean()
        c.append(2 * cov / (a.var(ddof=1) + b.var(ddof=1) + (a.mean() - b.mean()) ** 2 + 1e-8))
    return mse + 0.1 * (1 - float(np.mean(c)))


SELECTIONS = ("ccc_mean", "ccc_smoothed_sum", "ccc_rjcma", "val_loss")


def selection_score(kind: str, ev: Any, preds: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                    valid: Mapping[str, np.ndarray]) -> tuple[float, float | None]:
    """(score to maximise, validation loss or None) of one epoch under selection ``kind``.

    ``ccc_mean``: mean raw official CCC (avpipe; JCA selects on its dimension's raw CCC);
    ``ccc_smoothed_sum``: CCC_V + CCC_A after the 20/50-frame smoothing (RJA/DCA ``val.py``);
    ``ccc_rjcma``: mean of RJCMA's CCC (unbiased variances); ``val_loss``: lowest MAVEN loss."""
    if kind == "ccc_mean":
        return ev.overall["mean"], None
    if kind == "ccc_smoothed_sum":
        if not ev.overall_smoothed:
            raise ValueError("selection ccc_smoothed_sum needs smoothing widths (smoothing = [20, 50])")
        return ev.overall_smoothed["valence"] + ev.overall_smoothed["arousal"], None
    p, y = concat_valid(preds, labels, valid)
    if kind == "ccc_rjcma":
        return (ccc_unbiased_var(p[:, 0], y[:, 0]) + ccc_unbiased_var(p[:, 1], y[:, 1])) / 2, None
    if kind == "val_loss":
        loss = maven_val_loss(p, y)
        return -loss, loss
    raise ValueError(f"unknown selection {kind!r}; use one of {', '.join(SELECTIONS)}")


# ----------------------------------------------------------------------------- initialisation
INITS = ("avpipe", "pytorch", "praveen_av")


def apply_init(model: nn.Module, kind: str) -> nn.Module:
    """Re-initialise ``model`` the way its authors' code leaves it at construction.

    ``avpipe``: the model's own init (Xavier-uniform, zero bias on its Linear layers);
    ``pytorch``: PyTorch's defaults — every Linear ``reset_parameters()`` and the raw block matrices
    (JCA-v1, which the JCA code holds as bias-free ``nn.Linear``) U(±1/√fan_in) with fan_in their
    first dimension (JCA and RJCMA write no init code; RJCMA's TCN Xavier is a no-op on its
    weight-normed convolutions, and takes effect only on the 1×1 downsample, which avpipe's TCN does
    too); ``praveen_av``: the model's Xavier init, and the BLSTM initial states drawn as the RJA/DCA
    code draws them: one Xavier-uniform (2·2·layers, h) tensor, rows h0 then c0."""
    if kind not in INITS:
        raise ValueError(f"unknown init {kind!r}; use one of {', '.join(INITS)}")
    if kind == "pytorch":
        from avpipe.fusion.models.blocks import JCAv1

        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
            elif isinstance(m, JCAv1):
                for p in m.parameters():
                    b = 1.0 / math.sqrt(p.shape[0])
                    with torch.no_grad():
                        p.uniform_(-b, b)
    elif kind == "praveen_av":
        from avpipe.fusion.models.blocks import BLSTM

        for m in model.modules():
            if isinstance(m, BLSTM):
                n = m.h0.shape[0]
                t = torch.empty(2 * n, m.h0.shape[-1])
                nn.init.xavier_uniform_(t)
                with torch.no_grad():
                    m.h0.copy_(t[:n].unsqueeze(1))
                    m.c0.copy_(t[n:].unsqueeze(1))
    return model


# ----------------------------------------------------------------------------- normalisation
INPUT_NORMS = ("zscore", "none", "text_scalar")


def recipe_stats(kind: str, stats: Any) -> Any:
    """The normalisation statistics a recipe applies, from the training split's per-dimension
    ``stats``: ``zscore`` as they are (avpipe); ``none`` identity (JCA, RJA, DCA, MAVEN: features
    enter raw; RJA/DCA L2-normalise inside the model, MAVEN standardises per window inside it);
    ``text_scalar``: identity except text, standardised by one scalar mean and std over all its
    training values (RJCMA's BERT statistics, taken from the training split)."""
    from avpipe.fusion.data import Stats

    if kind not in INPUT_NORMS:
        raise ValueError(f"unknown input_norm {kind!r}; use one of {', '.join(INPUT_NORMS)}")
    if kind == "zscore":
        return stats
    mean = {m: np.zeros_like(v) for m, v in stats.mean.items()}
    std = {m: np.ones_like(v) for m, v in stats.std.items()}
    if kind == "text_scalar" and "text" in stats.mean:
        mu_d, sd_d = stats.mean["text"].astype(np.float64), stats.std["text"].astype(np.float64)
        mu = float(mu_d.mean())
        sd = math.sqrt(float((sd_d ** 2 + (mu_d - mu) ** 2).mean()))
        mean["text"] = np.full_like(stats.mean["text"], mu)
        std["text"] = np.full_like(stats.std["text"], sd if sd > 0 else 1.0)
    return Stats(mean, std)
