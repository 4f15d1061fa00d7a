"""The stage fingerprint: the one function that decides whether a cache entry can be reused.

A fingerprint is a hash of everything that can change a stage's output and nothing else:

* the stage ``name`` and code ``version`` (bump it when the output changes);
* its canonical semantic config (:func:`avpipe.pipeline.config.canonical_json`);
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from avpipe.pipeline.config import canonical_json
from avpipe.pipeline.stage import Stage

#: Bump only if the fingerprint *recipe* changes (it invalidates every cache).
FINGERPRINT_SCHEMA = 1


@dataclass(frozen=True)
class Fingerprint:
    """A stage fingerprint with the facts it was computed from (stored in the index)."""

    value: str
    stage: str
    version: str
    config_json: str
    weights_id: str | None
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.value[:16]

    def upstream_json(self) -> str:
        return json.dumps(self.upstream, sort_keys=True)


def upstream_names(stage: type[Stage] | Stage) -> tuple[str, ...]:
    """The stages whose fingerprints enter ``stage``'s: its ``requires`` plus ``probe``."""
    names = tuple(stage.requires)
    if stage.name != "probe" and "probe" not in names:
        names = ("probe",) + names
    return tuple(sorted(set(names)))


def stage_fingerprint(stage: Stage, upstream: Mapping[str, str]) -> Fingerprint:
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
    weights_id = stage.weights_id()
    payload: dict[str, Any] = {
        "schema": FINGERPRINT_SCHEMA,
        "stage": stage.name,
        "version": str(stage.version),
        "config": json.loads(config_json),
        "weights": weights_id,
        "upstream": ups,
    }
    digest = hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
    return Fingerprint(digest, stage.name, str(stage.version), config_json, weights_id, ups)


def fingerprint_graph(stages: Mapping[str, Stage], order: list[str]) -> dict[str, Fingerprint]:
    """Fingerprints of every stage in ``order`` (topological), each computed once."""
    fps: dict[str, Fingerprint] = {}
    for name in order:
        ups = {n: fps[n].value for n in upstream_names(stages[name]) if n in fps}
        fps[name] = stage_fingerprint(stages[name], ups)
    return fps
