"""PNG plots of a run (matplotlib, Agg backend: no display needed on a training server)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend: plots are written, never shown, so
    training and comparing work on servers without a display."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss and validation CCC (V, A, mean; smoothed dashed) per epoch."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ep = [int(float(r["epoch"])) for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [float(r["train_loss"]) for r in history], marker="o")
    a1.set_xlabel("epoch")
    a1.set_ylabel("train loss")
    a1.grid(alpha=.3)
    for k, c in (("valence", "C0"), ("arousal", "C1"), ("mean", "k")):
        a2.plot(ep, [float(r[f"val_ccc_{k}"]) for r in history], color=c, label=k)
        if f"val_ccc_{k}_smoothed" in history[0]:
            a2.plot(ep, [float(r[f"val_ccc_{k}_smoothed"]) for r in history], color=c, ls="--", alpha=.6)
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation CCC (dashed: smoothed)")
    a2.legend()
    a2.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_predictions(preds: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                     valid: Mapping[str, np.ndarray], path: str | Path, n: int = 3) -> Path:
    """Prediction vs target over time for the ``n`` validation videos with most labelled frames."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(preds, key=lambda k: -int(np.sum(valid[k])))[: max(1, n)]
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 2.6 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for d, dim in enumerate(("valence", "arousal")):
            ax = axes[i][d]
            y = np.where(valid[name], labels[name][:, d], np.nan)
            ax.plot(y, color="k", lw=1, label="target")
            ax.plot(preds[name][:, d], color="C3", lw=1, alpha=.8, label="prediction")
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{name} — {dim}", fontsize=9)
            if i == 0 and d == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
