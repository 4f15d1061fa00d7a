"""Exact reads: which fingerprint of a stage a reader means.

A stage name alone never means "the newest entry of whatever config": it means the fingerprint of
one stage config — the stage's defaults unless the caller gives options — with the default (or
given) configs of every stage upstream. That fingerprint is found in the index by the facts it is
computed from (stage, code version, canonical config, upstream fingerprints), so a reader needs
no model weights; only when several recorded fingerprints differ by weights alone are the weights
checksummed (without writing anything) to choose, and if that is impossible the read refuses and
lists the candidates.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from avpipe.pipeline.types import AmbiguousRead, NotCached, Runtime

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.pipeline.index import Index
    from avpipe.pipeline.config import PipelineConfig

def as_pipeline_config(stage: str, config: Any) -> "PipelineConfig":
    """``config`` as a whole pipeline config: None (defaults), a PipelineConfig (the whole set),
    a config file path, a ``{"stages": {...}}`` mapping, or the options of ``stage`` alone
    (``{"n_mels": 64}``)."""
    from avpipe.pipeline.config import PipelineConfig

    if config is None:
        return PipelineConfig()
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        pcfg = PipelineConfig.load(config)
        pcfg.validate()
        return pcfg
    if isinstance(config, Mapping):
        if set(config) == {"stages"}:
            pcfg = PipelineConfig.from_dict(dict(config))
            pcfg.validate()  # a misspelt stage name must not silently mean its defaults
            return pcfg
        return PipelineConfig({stage: dict(config)})
    raise TypeError(f"config for {stage!r} must be a mapping of options or a PipelineConfig, "
                    f"not {type(config).__name__}")


def _not_cached(message: str, wanted: str) -> NotCached:
    """NotCached carrying ``wanted`` (what was asked for, without the list of what the cache has:
    Cache.read's ambiguity message lists the candidates once). Built here rather than in a local
    of the raising frame: an exception held by a local of the frame its traceback references is a
    cycle that keeps every caller's arrays alive until the next garbage collection."""
    err = NotCached(message)
    err.wanted = wanted
    return err


def describe(rows: list[dict[str, Any]]) -> str:
    """``3fa2c1d0e5b7a9f1 v2 {"backbone": "dlib"}`` per candidate, for error messages."""
    return "; ".join(f"{r['fingerprint'][:16]} v{r['version']} {r['config_json']}"
                     + (f" weights={str(r['weights_id'])[:12]}" if r.get("weights_id") else "")
                     for r in rows)


def resolve_fingerprint(index: "Index", stage: str, config: Any = None) -> str:
    """The recorded fingerprint of ``stage`` under ``config`` (see :func:`as_pipeline_config`).

    Raises :class:`NotCached` when the cache has no fingerprint for that config (naming the ones
    it has, with their configs) and :class:`AmbiguousRead` when several match and the weights
    cannot tell them apart.
    """
    return resolve_fingerprints(index, [stage], as_pipeline_config(stage, config))[stage]


def resolve_fingerprints(index: "Index", stages: list[str], config: Any = None) -> dict[str, str]:
    """:func:`resolve_fingerprint` for a set of stages under one pipeline config, at once:
    ``{stage: fingerprint}`` for ``stages`` and everything they read."""
    from avpipe.pipeline.config_schema import canonical_json
    from avpipe.pipeline.fingerprint import fingerprint_of, upstream_names
    from avpipe.pipeline.sideeffects import read_only
    from avpipe.pipeline.stage import get_stage_class, topological_order
    from avpipe.pipeline.types import WeightsMissingError

    pcfg = as_pipeline_config(stages[0] if stages else "", config)
    try:
        order = topological_order(list(stages))
    except KeyError as e:
        raise NotCached(f"{e.args[0]}; a stage not registered in this process can only be read "
                        "by fingerprint=") from e
    resolved: dict[str, str] = {}
    for name in order:
        cls = get_stage_class(name)
        try:
            inst = cls(pcfg.stage_config(name), Runtime())
        except (TypeError, ValueError) as e:
            raise ValueError(f"config for stage {name!r}: {e}") from e
        cj = canonical_json(inst.semantic_config())
        ups = {u: resolved[u] for u in upstream_names(inst)}
        rows = index.fingerprint_rows(name)
        cands = [r for r in rows
                 if r["version"] == str(cls.version) and r["config_json"] == cj and r["upstream"] == ups
                 and fingerprint_of(name, r["version"], r["config_json"], r["weights_id"], ups).value
                 == r["fingerprint"]]
        if len(cands) > 1:
            try:
                with read_only():
                    wid = inst.weights_id()
            except WeightsMissingError:
                wid = None
            cands = [r for r in cands if r["weights_id"] == wid] or cands
        if len(cands) == 1:
            resolved[name] = cands[0]["fingerprint"]
            continue
        wanted = f"{name} v{cls.version} config {cj}" + (
            f" (read by {', '.join(s for s in stages if s != name)})" if name not in stages else "")
        if not cands:
            have = f"; the cache has: {describe(rows)}" if rows else "; the cache has no fingerprint of it"
            raise _not_cached(f"no cached fingerprint of {wanted}{have}. Run `avpipe extract` with that "
                              "config, or pass config= / fingerprint= to read another one", wanted)
        raise AmbiguousRead(f"{len(cands)} cached fingerprints of {wanted} differ only by their weights "
                            f"and the weights here cannot tell which: {describe(cands)}; pass fingerprint=",
                            [(r["fingerprint"], json.loads(r["config_json"])) for r in cands])
    return resolved
