"""TrainConfig: every option of a training run, round-tripping to JSON.

Options left ``None`` take the model's defaults (``FusionModel.train_defaults``: the optimiser and
schedule of its paper/code, models.md) when the run starts; the *resolved* config — including the
fingerprint each modality resolved to — is what the run folder records, so a run names exactly
what it trained on and with which settings.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline.config import config_from_dict, load_config_file, save_config_file

GENERIC_DEFAULTS: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                                    "epochs": 30, "batch_size": 32, "warmup_epochs": 0}


@dataclass
class TrainConfig:
    fusion: str = "jca"
    labels: str = ""
    cache: str = "cache"
    out: str = ""
    features: dict[str, str] = field(default_factory=dict)  # modality -> stage[@fingerprint] as asked
    resolved_features: dict[str, dict[str, str]] = field(default_factory=dict)  # modality -> {stage, fingerprint}
    model: dict[str, Any] = field(default_factory=dict)  # model constructor options
    # data
    split_file: str | None = None
    val_fraction: float = 0.15
    label_tolerance: int = 10
    clip_labels: bool = False  # clip label values outside [-1, 1] (other than -5) instead of refusing them
    window: int = 300
    hop: int = 200
    eval_hop: int | None = None  # default: hop
    feature_dtype: str = "auto"  # keep the cache's dtype in memory (float16 halves the bank)
    memory_budget_gb: float | None = None  # None: half the device's free memory
    # optimisation (None = model default)
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None  # adam | adamw
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None  # step | plateau | warmup_plateau | none
    warmup_epochs: int | None = None
    step_start: int = 5  # "step": lr × step_gamma every step_every epochs after step_start
    step_every: int = 2
    step_gamma: float = 0.8
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    min_lr: float = 1e-8
    grad_clip: float = 1.0
    loss: str = "ccc"  # ccc | ccc_window | mse
    aux_losses: dict[str, float] | None = None  # None: model default (maven: polar 0.1)
    amp: str = "auto"  # auto (fp16 on CUDA) | off | fp16 | bf16
    patience: int = 10  # early stopping: epochs without validation CCC improvement
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    smoothing: list[int] = field(default_factory=lambda: [20, 50])
    plot_videos: int = 3

    # -- resolution ---------------------------------------------------------------------
    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` optimisation option filled from the model's defaults."""
        from avpipe.fusion.models import get_model_class

        cls = get_model_class(self.fusion)
        d = {**GENERIC_DEFAULTS, **cls.train_defaults}
        out = dataclasses.replace(self)
        for k, v in d.items():
            if getattr(out, k, None) is None:
                setattr(out, k, v)
        if out.aux_losses is None:
            out.aux_losses = dict(cls.aux_losses)
        if out.eval_hop is None:
            out.eval_hop = out.hop
        return out

    # -- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, d)

    def save(self, path: str | Path) -> None:
        save_config_file(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(load_config_file(path))

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
