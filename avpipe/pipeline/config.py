"""Dataclass configs: canonical form for fingerprints, and round-trip to a file.

Why one module: the cache key of a stage is a hash of its *canonical* config, so every place
that turns a config into bytes must do it the same way. `canonical_json` is that one way.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (nested dataclasses, tuples → lists)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    return _plain(dataclasses.asdict(cfg))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats by repr."""
    if dataclasses.is_dataclass(value):
        value = config_to_dict(value)
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build a dataclass config from a dict, rejecting unknown keys with a clear message."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {cls.__name__}; valid options: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".toml":
        return tomllib.loads(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e}); use .json or .toml") from e


def save_config_file(data: dict[str, Any], path: str | Path) -> None:
    """Write a config dict as pretty JSON (atomically)."""
    from avpipe.pipeline.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")
