"""TensorBoard event files for a run (optional: only when ``tensorboard`` is installed).

Why alongside the CSV: researchers follow training curves in TensorBoard and compare runs there
by pointing it at a sweep folder; ``metrics.csv`` stays the source of truth (and what ``avpipe
compare`` reads). Written by rank 0 only, into ``<run>/tensorboard/``:

* per epoch: ``loss/train``, ``ccc/val_valence``, ``ccc/val_arousal``, ``ccc/val_mean`` (and the
  ``_smoothed`` variants), ``lr``, ``time/epoch_s``;
* at the end: the prediction-vs-target figure of the best checkpoint (``predictions/val``), the
  run's resolved config as text, and its hyper-parameters with the best validation CCC for the
  HParams plugin (:func:`log_hparams`), so the cells of a sweep are compared in one table there.

A missing or broken tensorboard never fails training: the writer is then simply None.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: metrics.csv column -> TensorBoard tag.
TAGS = {"train_loss": "loss/train", "lr": "lr", "epoch_s": "time/epoch_s", "train_s": "time/train_s",
        "val_ccc_valence": "ccc/val_valence", "val_ccc_arousal": "ccc/val_arousal", "val_ccc_mean": "ccc/val_mean",
        "val_ccc_valence_smoothed": "ccc/val_valence_smoothed",
        "val_ccc_arousal_smoothed": "ccc/val_arousal_smoothed", "val_ccc_mean_smoothed": "ccc/val_mean_smoothed"}


def open_writer(run_path: str | Path) -> Any:
    """A ``SummaryWriter`` on ``<run>/tensorboard`` or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - ImportError, or a tensorboard/protobuf mismatch
        return None
    try:
        return SummaryWriter(str(Path(run_path) / "tensorboard"))
    except Exception:  # noqa: BLE001  # pragma: no cover
        return None


def log_epoch(tb: Any, row: Mapping[str, Any], epoch: int) -> None:
    """One epoch's row of metrics.csv as scalars (known columns under readable tags)."""
    if tb is None:
        return
    for k, v in row.items():
        if k == "epoch" or not isinstance(v, (int, float)):
            continue
        tb.add_scalar(TAGS.get(k, k), float(v), epoch)
    tb.flush()


def log_final(tb: Any, run_path: str | Path, step: int) -> None:
    """The prediction-vs-target PNG the trainer drew and the resolved config."""
    if tb is None:
        return
    run_path = Path(run_path)
    png = run_path / "plots" / "val_predictions.png"
    if png.is_file():
        try:
            import matplotlib.image as mpimg

            img = mpimg.imread(str(png))[..., :3]
            tb.add_image("predictions/val", img, step, dataformats="HWC")
        except Exception:  # noqa: BLE001 - a figure is a nicety, never a failure
            pass
    cfg = run_path / "config.json"
    if cfg.is_file():
        tb.add_text("config", "```\n" + cfg.read_text() + "\n```", step)
    tb.flush()


#: Config keys that say where or how a run ran, not what it trained: never hyper-parameters.
_NOT_HPARAMS = ("out", "cache", "labels", "split_file", "device", "num_threads", "plot_videos", "resolved_features",
                "feature_configs", "distributed")


def hparams_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config as flat HParams values (``model.hidden``; lists/dicts/None as text)."""
    out: dict[str, Any] = {}

    def put(key: str, v: Any) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                put(f"{key}.{k}", x)
        elif isinstance(v, bool) or isinstance(v, (int, float, str)):
            out[key] = v
        else:
            import json

            out[key] = json.dumps(v, sort_keys=True, default=str)

    for k, v in config.items():
        if k not in _NOT_HPARAMS:
            put(k, v)
    for m, d in (config.get("resolved_features") or {}).items():
        out[f"fp.{m}"] = f"{d.get('stage')}@{str(d.get('fingerprint', ''))[:8]}"
    return dict(sorted(out.items()))


def log_hparams(tb: Any, config: Mapping[str, Any], best: Mapping[str, Any]) -> None:
    """The HParams plugin's record: hyper-parameters and the best epoch's validation CCC."""
    if tb is None:
        return
    metrics = {f"hparam/{k}": float(v) for k, v in best.items()
               if k.startswith("val_ccc") and isinstance(v, (int, float))}
    if not metrics:
        return
    try:
        tb.add_hparams(hparams_of(config), metrics, run_name=".")
    except Exception:  # noqa: BLE001 - a nicety, never a failure
        return
    tb.flush()
