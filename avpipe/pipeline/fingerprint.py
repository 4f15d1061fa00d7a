"""The stage fingerprint: the one function that decides whether a cache entry can be reused.

A fingerprint is a hash of everything that can change a stage's output and nothing else:

* the stage ``name`` and code ``version`` (bump it when the output changes);
* its canonical semantic config (:func:`avpipe.pipeline.config_schema.canonical_json`);
* the checksum of its weights (:meth:`Stage.weights_id`);
* the fingerprints of the stages it reads (its ``requires`` plus ``probe``), so a change anywhere
  upstream changes every fingerprint below it and only that subtree recomputes.

Jobs, batch size, device, threads and paths live in :class:`~avpipe.pipeline.stage.Runtime`
and never reach this module. The same idea as Hugging Face ``datasets``' ``update_fingerprint``,
but deterministic for every input (no random fallback: a config that cannot be canonicalised is
an error, not a silent cache miss).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from avpipe.pipeline import graph
from avpipe.pipeline.config_schema import canonical_json
from avpipe.pipeline.types import Fingerprint, Runtime, WeightsMissingError

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.given import Given
    from avpipe.pipeline.stage import Stage

__all__ = ["FINGERPRINT_SCHEMA", "Fingerprint", "StageNode", "fingerprint_graph", "precomputed_fingerprint",
           "stage_fingerprint", "upstream_names", "walk"]

#: Bump only if the fingerprint *recipe* changes (it invalidates every cache).
FINGERPRINT_SCHEMA = 1


def upstream_names(stage: "type[Stage] | Stage") -> tuple[str, ...]:
    """The stages whose fingerprints enter ``stage``'s: its ``requires`` plus ``probe``."""
    return graph.upstream_names(stage.name, stage.requires)


def stage_fingerprint(stage: "Stage", upstream: Mapping[str, str]) -> Fingerprint:
    """Fingerprint of ``stage`` (an instance, so its config and weights are known).

    ``upstream`` maps each of :func:`upstream_names` to its fingerprint; a missing one is a
    programming error (stages must be fingerprinted in topological order).
    """
    needed = upstream_names(stage)
    missing = [n for n in needed if n not in upstream]
    if missing:
        raise KeyError(f"{stage.name}: upstream fingerprints missing for {missing}")
    ups = {n: upstream[n] for n in needed}
    config_json = canonical_json(stage.semantic_config())
    return fingerprint_of(stage.name, str(stage.version), config_json, stage.weights_id(), ups)


def fingerprint_of(stage: str, version: str, config_json: str, weights_id: str | None,
                   upstream: Mapping[str, str]) -> Fingerprint:
    """The fingerprint recipe itself, from the recorded facts (also used to re-check index rows)."""
    payload: dict[str, Any] = {
        "schema": FINGERPRINT_SCHEMA,
        "stage": stage,
        "version": version,
        "config": json.loads(config_json),
        "weights": weights_id,
        "upstream": dict(upstream),
    }
    return Fingerprint(_digest(payload), stage, version, config_json, weights_id, dict(upstream))


def precomputed_fingerprint(stage: str, config: Mapping[str, Any], version: str = "precomputed") -> str:
    """The fingerprint of features no stage computed here (a crop tree, synthetic features,
    another lab's embeddings): the stage name, a version naming the source, and the config
    that describes it (for a crop tree, the probe's fingerprint and the crops' content hash).

    Its own schema (``precomputed-1``), so it can never equal an extracted entry's fingerprint;
    its recipe is frozen like :func:`fingerprint_of`'s (caches hold these values)."""
    return _digest({"schema": "precomputed-1", "stage": stage, "version": version, "config": dict(config)})


def _digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(payload)).encode("utf-8")).hexdigest()


@dataclass
class StageNode:
    """One stage of a fingerprint walk: the instance, its fingerprint, or why it has none."""

    name: str
    stage: "Stage"
    fingerprint: Fingerprint | None
    unavailable: str | None = None
    error: BaseException | None = None


def walk(names: Iterable[str], config: "PipelineConfig | None" = None, runtime: Runtime | None = None,
         *, stages: Mapping[str, "Stage"] | None = None,
         given: Mapping[str, "Given"] | None = None) -> dict[str, StageNode]:
    """The fingerprint walk: every stage of ``names`` (in dependency order) fingerprinted once
    from its config and its upstream fingerprints. The one loop that planning, ``status``, the
    read API and :func:`fingerprint_graph` share.

    Stages are built from ``config`` (default: every stage's defaults) and ``runtime``, unless
    ``stages`` gives the instances. A stage whose weights are missing (or whose upstream has no
    fingerprint) gets none and says why (``unavailable``); other errors propagate.

    A stage in ``given`` (:class:`~avpipe.pipeline.given.Given`) takes the given fingerprint, not
    one derived from its config, and its source (if any) as its instance; a given fingerprint
    derived from other upstream entries than this run's is a ``ValueError``.
    """
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.stage import get_stage_class

    config = config or PipelineConfig()
    runtime = runtime or Runtime()
    fps: dict[str, str] = {}
    out: dict[str, StageNode] = {}
    for name in names:
        pinned = (given or {}).get(name)
        if pinned is not None and pinned.source is not None:
            stage = pinned.source
        else:
            stage = stages[name] if stages is not None else get_stage_class(name)(config.stage_config(name), runtime)
        node = StageNode(name, stage, None)
        out[name] = node
        missing_up = [u for u in upstream_names(stage) if u not in fps]
        if missing_up:
            node.unavailable = f"upstream stage {missing_up[0]} is unavailable"
            continue
        if pinned is not None:
            _check_given(name, pinned.fingerprint, {u: fps[u] for u in upstream_names(stage)})
            node.fingerprint = pinned.fingerprint
            fps[name] = pinned.fingerprint.value
            continue
        try:
            node.fingerprint = stage_fingerprint(stage, fps)
        except WeightsMissingError as e:
            node.unavailable, node.error = f"{type(e).__name__}: {e}", e
            continue
        fps[name] = node.fingerprint.value
    return out


def _check_given(name: str, fp: Fingerprint, upstream: Mapping[str, str]) -> None:
    """A given fingerprint stands for entries of ``name`` derived from this run's ``upstream``."""
    if fp.stage != name:
        raise ValueError(f"given {name!r} entries: fingerprint {fp.value[:16]} is of stage {fp.stage!r}")
    for u, value in upstream.items():
        theirs = fp.upstream.get(u)
        if theirs != value:
            raise ValueError(f"given {name!r} entries ({fp.value[:16]}) were derived from {u} "
                             f"{(theirs or 'nothing')[:16]}, this run's {u} is {value[:16]}")


def fingerprint_graph(stages: Mapping[str, "Stage"], order: list[str]) -> dict[str, Fingerprint]:
    """Fingerprints of every stage in ``order`` (topological), each computed once; missing
    weights raise."""
    nodes = walk(order, stages=stages)
    for node in nodes.values():
        if node.error is not None:
            raise node.error
        if node.fingerprint is None:
            raise KeyError(f"{node.name}: {node.unavailable}")
    return {n: node.fingerprint for n, node in nodes.items() if node.fingerprint is not None}
