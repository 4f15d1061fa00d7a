"""The pipeline config file: per-stage semantic options, as JSON or TOML.

Format (``--config FILE``)::

    {"stages": {"faces": {"min_face_size": 20}, "logmel": {"n_mels": 64}}}

or in TOML::

    [stages.logmel]
    n_mels = 64

Each section is mapped onto the stage's ``config_cls`` by :func:`config_from_dict` (unknown
options are an error naming the valid ones). Stages without a section use their defaults. Only
semantic options belong here: they enter fingerprints. Jobs, device, batch size are CLI flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline.config import config_from_dict, load_config_file, save_config_file


@dataclass
class PipelineConfig:
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PipelineConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - {"stages"})
        if unknown:
            raise ValueError(f"unknown top-level key(s) {unknown} in pipeline config; expected 'stages'")
        stages = data.get("stages") or {}
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise ValueError("pipeline config: 'stages' must map stage names to option tables")
        return cls({str(k): dict(v) for k, v in stages.items()})

    @classmethod
    def load(cls, path: str | Path) -> "PipelineConfig":
        return cls.from_dict(load_config_file(path))

    def to_dict(self) -> dict[str, Any]:
        return {"stages": {k: dict(v) for k, v in sorted(self.stages.items())}}

    def save(self, path: str | Path) -> None:
        save_config_file(self.to_dict(), path)

    def validate(self) -> None:
        """Unknown stage names or options → ValueError (checked before any work starts)."""
        from avpipe.pipeline.stage import stage_registry

        reg = stage_registry()
        bad = sorted(set(self.stages) - set(reg))
        if bad:
            raise ValueError(f"config names unknown stage(s) {bad}; known stages: {sorted(reg)}")
        for name in self.stages:
            self.stage_config(name)

    def stage_config(self, name: str) -> Any:
        """The stage's ``config_cls`` instance built from this file's section (or defaults)."""
        from avpipe.pipeline.stage import get_stage_class

        cls = get_stage_class(name).config_cls
        try:
            return config_from_dict(cls, self.stages.get(name))
        except (TypeError, ValueError) as e:
            raise ValueError(f"stage {name!r}: {e}") from e
