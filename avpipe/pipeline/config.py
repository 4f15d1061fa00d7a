"""The pipeline config file: per-stage semantic options, as JSON or TOML.

Format (``--config FILE``)::

    {"stages": {"faces": {"min_face_size": 20}, "logmel": {"n_mels": 64}}}

or in TOML::

    [stages.logmel]
    n_mels = 64

Each section is mapped onto the stage's ``config_cls`` by :func:`config_from_dict`, which
checks and coerces every value (unknown options and bad values are a :class:`ConfigError` naming
the section, the key, the value and what is allowed). Stages without a section use their defaults. Only
semantic options belong here: they enter fingerprints. Jobs, device, batch size are CLI flags.

Named presets ship inside the package (``avpipe/configs/<name>.toml``), so a pip-installed avpipe
has them too: ``--config offline`` selects the models that need no download; ``--config jca``,
``rja``, ``rjcma``, ``maven`` the inputs of those papers. A preset may also name the trainer's
feature set (``[features]``: modality → stage), which ``avpipe train --fusion NAME`` uses by
default when a preset of that name exists and the cache has its features; extraction ignores it. A path that exists
always wins over a preset of the same name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline.config_schema import (NO_VALUE, ConfigError, ConfigFileNotFoundError, ConfigIssue,
                                           config_from_dict, load_config_file, save_config_file)


PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """The pipeline configs shipped with avpipe, by name (``offline``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it exists; else, for a bare name (no folder, no suffix) that names a
    preset, the preset's file; else ``path`` unchanged (reading it then says it is missing, and
    names the presets)."""
    p = Path(path)
    if p.exists() or p.suffix or len(p.parts) != 1:
        return p
    preset = PRESET_DIR / f"{p.name}.toml"
    return preset if preset.is_file() else p


@dataclass
class PipelineConfig:
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)  # modality -> stage, for the trainer

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PipelineConfig":
        """The file's structure (``stages`` → tables); the options are checked by :meth:`validate`."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"stages", "features"})
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {unknown} in pipeline config; expected 'stages' "
                              "(e.g. [stages.logmel]) or 'features'")
        feats = data.get("features") or {}
        if not isinstance(feats, dict) or not all(isinstance(v, str) for v in feats.values()):
            raise ConfigError("pipeline config: 'features' must map modalities to stage names "
                              '(e.g. [features] audio = "vggish")')
        stages = data.get("stages") or {}
        if not isinstance(stages, dict):
            raise ConfigError("pipeline config: 'stages' must map stage names to option tables")
        bad = [ConfigIssue(f"stages.{k}", "", v, "must be a table of options") for k, v in stages.items()
               if not isinstance(v, dict)]
        if bad:
            raise ConfigError(bad)
        return cls({str(k): dict(v) for k, v in stages.items()}, {str(k): str(v) for k, v in feats.items()})

    @classmethod
    def load(cls, path: str | Path) -> "PipelineConfig":
        """A config file, or a preset by name (:func:`resolve_config_path`)."""
        try:
            return cls.from_dict(load_config_file(resolve_config_path(path)))
        except ConfigFileNotFoundError as e:
            raise ConfigFileNotFoundError(f"{e}; or a preset name: {', '.join(preset_names())}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stages": {k: dict(v) for k, v in sorted(self.stages.items())}}
        if self.features:
            out["features"] = dict(sorted(self.features.items()))
        return out

    def save(self, path: str | Path) -> None:
        save_config_file(self.to_dict(), path)

    def validate(self) -> None:
        """Check every section before any work starts: unknown stage names, unknown options and
        bad values, all reported together as one :class:`ConfigError` (a usage error)."""
        from avpipe.pipeline.stage import stage_registry

        reg = stage_registry()
        issues: list[ConfigIssue | str] = [
            ConfigIssue(f"stages.{n}", "", NO_VALUE, f"unknown stage; known stages: {', '.join(sorted(reg))}")
            for n in sorted(set(self.stages) - set(reg))]
        issues += [ConfigIssue("features", m, st, f"unknown stage; known stages: {', '.join(sorted(reg))}")
                   for m, st in sorted(self.features.items()) if st.partition("@")[0] not in reg]
        for name in sorted(set(self.stages) & set(reg)):
            try:
                self.stage_config(name)
            except ConfigError as e:
                issues += e.issues
        if issues:
            raise ConfigError(issues)

    def stage_config(self, name: str) -> Any:
        """The stage's ``config_cls`` instance built (checked, coerced) from this file's section
        or the defaults. Bad values: :class:`ConfigError` naming ``[stages.<name>]``."""
        from avpipe.pipeline.stage import get_stage_class

        cls = get_stage_class(name).config_cls
        return config_from_dict(cls, self.stages.get(name), section=f"stages.{name}")


def paper_preset(name: str) -> "PipelineConfig | None":
    """The shipped preset called ``name`` (e.g. a fusion model's paper: ``jca``), or None.
    Only shipped presets count here: a file of that name in the working folder does not."""
    p = PRESET_DIR / f"{name}.toml"
    return PipelineConfig.from_dict(load_config_file(p)) if p.is_file() else None
