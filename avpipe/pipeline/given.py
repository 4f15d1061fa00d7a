"""Given upstream entries: a stage of a run whose entries come from somewhere else and are never
computed by the stage registered under that name.

Why: features ingested from outside (the organisers' face crops read as the ``faces`` stage)
have a fingerprint of their own (:func:`~avpipe.pipeline.fingerprint.precomputed_fingerprint`),
and downstream stages (``visual``) must be planned on *those* entries. Without a way to say so, a
run asking for ``visual`` would plan ``faces`` from its config: MTCNN faces computed for the
videos the source does not cover, and stored next to the source's entries. A :class:`Given`
pins the stage's fingerprint for the run:

* ``source`` set: the source is the stage that computes the entries (e.g. the crop-tree reader),
  run by the runner like any stage — tasks, the shard writer, one index transaction per task,
  failure records, progress and resume after a crash — under the given fingerprint;
* ``source`` None: the entries must already be in the cache; videos without one are skipped by
  the stages downstream (with the reason), never computed.

Either way the stage's config in the run's :class:`~avpipe.pipeline.config.PipelineConfig` plays no
part, and downstream fingerprints are derived from the given one exactly as from a computed one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from avpipe.pipeline.types import Fingerprint

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.pipeline.stage import Stage
    from avpipe.pipeline.store import Cache

__all__ = ["Given", "given_from_cache"]


@dataclass(frozen=True)
class Given:
    """A stage's entries pinned for one run: their ``fingerprint`` (its ``stage`` is the stage
    name they stand for, its ``upstream`` what they were derived from) and the ``source`` that
    writes the missing ones, if any."""

    fingerprint: Fingerprint
    source: "Stage | None" = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source.name != self.fingerprint.stage:
            raise ValueError(f"given {self.fingerprint.stage!r} entries: source stage is named "
                             f"{self.source.name!r}")


def given_from_cache(cache: "Cache", fingerprint: str) -> Given:
    """The entries of ``fingerprint`` already in ``cache``, given without a source (the run
    computes none of them). Unknown fingerprint: ``KeyError`` naming it."""
    row = cache.index.fingerprint_row(fingerprint)
    if row is None:
        raise KeyError(f"fingerprint {fingerprint[:16]} is not in the cache's index")
    return Given(Fingerprint(row["fingerprint"], row["stage"], row["version"], row["config_json"],
                             row["weights_id"], dict(row["upstream"])))
