"""TrainConfig: every option of a training run, round-tripping to JSON.

Options left ``None`` take the defaults of the run's **recipe** (docs/recipes.md): ``authors`` — the
default for a published name — trains as the authors' released code does (:mod:`avpipe.fusion.recipes`);
``avpipe`` takes avpipe's own choices and the model's ``train_defaults`` (docs/models.md#training-defaults).
They are filled in when the run starts; the
*resolved* config — including the
fingerprint each modality resolved to — is what the run folder records, so a run names exactly
what it trained on and with which settings.

Every option is typed and range-checked when it is set (file, flag or Python): a bad value is a
:class:`~avpipe.pipeline.config_schema.ConfigError` naming ``[train]``, the key, the value and what is
allowed, which ``avpipe train`` prints as a usage error (exit 2) before loading anything.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from avpipe.pipeline.config_schema import (Float, Int, config_dataclass, config_from_dict, load_config_file, save_config_file,
                                           with_stored_keys)

GENERIC_DEFAULTS: dict[str, Any] = {"step_peak_lr": 1e-3, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step",
                                    "epochs": 30, "batch_size": 32, "warmup_epochs": 0,
                                    "window": 300, "hop": 200, "clip_len": 1, "patience": 10}


def check_device(name: str) -> str:
    """A device name as avpipe accepts it everywhere (config files and ``--device`` flags alike)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
    return name


Device = Annotated[str, AfterValidator(check_device)]
PosInt = Annotated[Int, Field(ge=1)]
#: Frames of a training/evaluation window or hop: an hour of 25 fps video is 90 000 frames; more
#: than this is a typo that would only fail (out of memory) deep inside the run.
MAX_FRAMES = 1_000_000
Frames = Annotated[Int, Field(ge=1, le=MAX_FRAMES)]


@config_dataclass
class TrainConfig:
    """Every option of a training run (a TrainConfig file holds these keys at its top level)."""

    fusion: Annotated[str, Field(min_length=1, description="fusion model name (avpipe train --list lists them)")] = "jca"
    recipe: Annotated[Literal["authors", "avpipe"] | None, Field(
        description="training recipe (unset = authors for jca, rja, dca, rjcma, maven; avpipe otherwise; "
                    "docs/recipes.md)")] = None
    labels: Annotated[str, Field(description="Aff-Wild2 annotation folder or a CSV (video,frame,valence,arousal)")] = ""
    cache: Annotated[str, Field(description="feature cache root")] = "cache"
    out: Annotated[str, Field(description="run folder (default runs/<fusion>)")] = ""
    features: Annotated[dict[str, str], Field(description="modality -> stage[@fingerprint] as asked")] = \
        field(default_factory=dict)
    resolved_features: Annotated[dict[str, dict[str, str]], Field(
        description="modality -> {stage, fingerprint} the run resolved to (written by the trainer)")] = \
        field(default_factory=dict)
    feature_configs: Annotated[dict[str, dict[str, Any]], Field(
        description="stage -> {fingerprint, version, config} of every stage the resolved features were "
                    "computed from, upstream included (written by the trainer): predict extracts exactly "
                    "these on any cache")] = field(default_factory=dict)
    model: Annotated[dict[str, Any], Field(description="model constructor options")] = field(default_factory=dict)
    # data
    split_file: Annotated[str | None, Field(description="file naming the train/validation split (unset = "
                                                        "random split by val_fraction)")] = None
    val_fraction: Annotated[Float, Field(ge=0.0, lt=1.0, description="fraction of tracks held out for "
                                                                     "validation without a split file")] = 0.15
    label_tolerance: Annotated[Int, Field(ge=0, description="frames by which label and feature lengths may "
                                                            "differ")] = 10
    clip_labels: Annotated[bool, Field(description="clip label values outside [-1, 1] (other than -5) "
                                                   "instead of refusing them")] = False
    window: Annotated[Frames | None, Field(description="training window length in frames (unset = model "
                                                       "default, e.g. jca 256, rja 512, rjcma 300)")] = None
    hop: Annotated[Frames | None, Field(description="training hop in frames (unset = model default)")] = None
    clip_len: Annotated[Frames | None, Field(description="frames pooled to one token (unset = model default; "
                                                         "1 = per-frame tokens)")] = None
    windows: Annotated[Literal["hop", "clip_phases"] | None, Field(
        description="training window enumeration: hop = every hop frames, last aligned to the end; clip_phases "
                    "= every clip phase, the JCA/RJA/DCA code's (unset = recipe)")] = None
    shuffle: Annotated[Literal["epoch", "once", "none"] | None, Field(
        description="batch order: reshuffled every epoch, shuffled once, or enumeration order (unset = recipe)")] = None
    drop_last: Annotated[bool | None, Field(description="drop a last incomplete batch (unset = recipe)")] = None
    eval_hop: Annotated[Frames | None, Field(description="evaluation hop in frames (unset = hop)")] = None
    feature_dtype: Annotated[Literal["auto", "float16", "float32", "float64"], Field(
        description="in-memory feature dtype (auto keeps the cache's; float16 halves the bank)")] = "auto"
    memory_budget_gb: Annotated[Float | None, Field(gt=0.0, description="feature bank budget in GiB (unset = half "
                                                                        "the device's free memory)")] = None
    # optimisation (None = model default)
    epochs: Annotated[PosInt | None, Field(description="epochs (unset = model default)")] = None
    batch_size: Annotated[PosInt | None, Field(description="windows per batch (unset = model default)")] = None
    optimizer: Annotated[Literal["adam", "adamw"] | None, Field(description="optimiser (unset = model "
                                                                           "default)")] = None
    lr: Annotated[Float | None, Field(gt=0.0, le=10.0, description="learning rate (unset = model default)")] = None
    weight_decay: Annotated[Float | None, Field(ge=0.0, le=10.0, description="weight decay (unset = model "
                                                                            "default)")] = None
    schedule: Annotated[Literal["step", "plateau", "warmup_plateau", "none", "praveen_av", "rjcma_warmup",
                                "plateau_loss"] | None, Field(
        description="learning-rate schedule (unset = model default)")] = None
    warmup_epochs: Annotated[Int | None, Field(ge=0, description="linear warm-up epochs of warmup_plateau "
                                                                 "(unset = model default)")] = None
    step_peak_lr: Annotated[Float | None, Field(gt=0.0, description="praveen_av schedule: the lr from epoch "
                                                                   "step_start + 1 on (unset = recipe)")] = None
    step_start: Annotated[Int, Field(ge=0, description="step schedule: first epoch that decays")] = 5
    step_every: Annotated[PosInt, Field(description="step schedule: lr x step_gamma every this many "
                                                    "epochs")] = 2
    step_gamma: Annotated[Float, Field(gt=0.0, le=1.0, description="step schedule: decay factor")] = 0.8
    plateau_patience: Annotated[Int, Field(ge=0, description="plateau schedules: epochs without validation "
                                                             "gain before decaying")] = 5
    plateau_factor: Annotated[Float, Field(gt=0.0, le=1.0, description="plateau schedules: decay "
                                                                       "factor")] = 0.1
    min_lr: Annotated[Float, Field(ge=0.0, description="learning-rate floor")] = 1e-8
    grad_clip: Annotated[Float | None, Field(ge=0.0, description="gradient-norm clip (0 = off; unset = "
                                                                 "recipe)")] = None
    loss: Annotated[Literal["ccc", "ccc_window", "mse", "ccc_jca", "ccc_praveen", "ccc_rjcma", "mse_mean"] | None,
                    Field(description="training loss (unset = recipe)")] = None
    selection: Annotated[Literal["ccc_mean", "ccc_smoothed_sum", "ccc_rjcma", "val_loss"] | None, Field(
        description="which epoch is best (unset = recipe)")] = None
    input_norm: Annotated[Literal["zscore", "none", "text_scalar"] | None, Field(
        description="feature normalisation with training statistics (unset = recipe)")] = None
    init: Annotated[Literal["avpipe", "pytorch", "praveen_av"] | None, Field(
        description="parameter initialisation (unset = recipe)")] = None
    aux_losses: Annotated[dict[str, Annotated[Float, Field(ge=0.0)]] | None, Field(
        description="auxiliary loss weights by name (unset = model default; maven: polar 0.1)")] = None
    # stored as ``amp`` (files, canonical JSON, sweep cells): the key runs have always recorded
    precision: Annotated[Literal["auto", "off", "fp16", "bf16"], Field(
        alias="amp", description="mixed precision (auto = fp16 on CUDA, off on CPU; bf16 on CUDA or CPU)")] = "auto"
    patience: Annotated[PosInt | None, Field(description="early stopping: epochs without validation CCC "
                                                         "improvement (unset = model default)")] = None
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1, description="random seed (split, init, batches)")] = 0
    device: Annotated[Device, Field(description="auto | cpu | cuda | cuda:N | mps")] = "auto"
    num_threads: Annotated[PosInt | None, Field(description="torch CPU threads (unset = torch's "
                                                            "default)")] = None
    smoothing: Annotated[list[Annotated[Int, Field(ge=0)]], Field(
        description="evaluation moving-average widths in frames (valence, arousal)")] = \
        field(default_factory=lambda: [20, 50])
    plot_videos: Annotated[Int, Field(ge=0, description="validation videos plotted")] = 3

    # -- resolution ---------------------------------------------------------------------
    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` option filled from the recipe's and the model's defaults."""
        from avpipe.fusion.models import get_model_class
        from avpipe.fusion.recipes import default_recipe, recipe_defaults

        cls = get_model_class(self.fusion)
        out = dataclasses.replace(self)
        if out.recipe is None:
            out.recipe = default_recipe(self.fusion)
        rec, rec_model = recipe_defaults(self.fusion, out.recipe)
        d = {**GENERIC_DEFAULTS, **cls.train_defaults, **rec}
        for k, v in d.items():
            if getattr(out, k, None) is None:
                setattr(out, k, v)
        out.model = {**rec_model, **out.model}
        if "clip_len" in out.model:  # an explicit model option wins; the model always gets it
            out.clip_len = int(out.model["clip_len"])
        out.model = {**out.model, "clip_len": int(out.clip_len)}
        if out.clip_len < 1 or out.window % out.clip_len:
            raise ValueError(f"window {out.window} is not a multiple of clip_len {out.clip_len} (model "
                             f"{self.fusion!r}); choose a window that is, or clip_len 1 for per-frame tokens")
        if out.selection == "ccc_smoothed_sum" and len(out.smoothing) < 2:
            raise ValueError(f"selection ccc_smoothed_sum (recipe {out.recipe!r} of {self.fusion!r}) needs two "
                             f"smoothing widths (valence, arousal), e.g. smoothing = [20, 50]")
        if "tokens" in cls.preset:  # what a sequence is (maven: one transcript segment) is recorded with the run
            out.model = {**out.model, "tokens": out.model.get("tokens", cls.preset["tokens"])}
        if out.aux_losses is None:
            out.aux_losses = dict(cls.aux_losses)
        if out.eval_hop is None:
            out.eval_hop = out.hop
        return out

    # -- files --
    @classmethod
    def load_run_config(cls, path: str | Path) -> "TrainConfig":
        """A run's recorded config. A run recorded before recipes existed (no ``recipe`` key)
        trained with what is now recipe ``avpipe`` and is marked so: resuming or evaluating it
        keeps its own recipe, never the authors' one its plain name now defaults to. Likewise a
        ``maven`` run recorded before ``maven`` became the segment-token model (no ``tokens``
        model option) trained the per-frame front end and reads back as ``maven-frames``."""
        d = without_distributed(load_config_file(path))
        if "recipe" not in d:
            d = {**d, "recipe": "avpipe"}
        from avpipe.fusion.segments import legacy_fusion

        if legacy_fusion(d):  # a maven run from before segment tokens: the per-frame front end
            d = {**d, "fusion": legacy_fusion(d), "model": {**dict(d.get("model") or {}), "tokens": "frame"}}
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """Keyed as ``config.json`` stores it (``precision`` under ``amp``)."""
        return with_stored_keys(type(self), dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Checked and coerced; bad values: :class:`~avpipe.pipeline.config_schema.ConfigError` naming ``[train]``."""
        return config_from_dict(cls, d, section="train")

    def save(self, path: str | Path) -> None:
        save_config_file(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(without_distributed(load_config_file(path)))

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


#: Key of a run's ``config.json`` that records how it was spread over ranks (world size, global
#: and per-rank batch). Not a TrainConfig field: it describes the launch, and a config read back
#: (resume, ``--config run/config.json``) drops it.
DISTRIBUTED = "distributed"


def without_distributed(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != DISTRIBUTED}


def saved_distributed(run_dir: Any) -> dict[str, Any] | None:
    """The ``distributed`` block of a run's ``config.json`` (None for a new run or an old one)."""
    try:
        d = load_config_file(Path(getattr(run_dir, "config", run_dir)))
    except (OSError, ValueError):
        return None
    v = d.get(DISTRIBUTED)
    return dict(v) if isinstance(v, dict) else None
