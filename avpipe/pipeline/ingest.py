"""Write precomputed per-video results into a cache as if a stage had produced them.

Why: tests and benchmarks need caches of known content (synthetic features with a planted
signal, an Aff-Wild2-sized corpus) without running extractors, and features computed elsewhere
(another lab's embeddings) deserve the same index, fingerprints and read API as extracted ones.
Everything goes through the store's own functions: :func:`~avpipe.pipeline.store.write_shard`
(temp name, fsync, rename) and :meth:`Index.commit_task` (one transaction), under the cache lock.

Videos that the index does not know yet are registered under their key with a synthetic file
row (``path = "precomputed:<key>"``, negative size/mtime/inode so the content-id memo of real files
can never match it).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avpipe.pipeline.config_schema import canonical_json
from avpipe.pipeline.fingerprint import Fingerprint, precomputed_fingerprint
from avpipe.pipeline.lock import CacheLock
from avpipe.pipeline.stage import StageResult
from avpipe.pipeline.store import Cache, check_stage_name, write_shard
from avpipe.provenance import entry_provenance


def precomputed(stage_name: str, config: Mapping[str, Any], version: str = "precomputed",
                upstream: Mapping[str, str] | None = None, value: str | None = None) -> Fingerprint:
    """The full :class:`Fingerprint` record of precomputed entries, as the index and the entries'
    provenance attrs hold it: ``value`` (default :func:`precomputed_fingerprint` of the config),
    the source's config and version, no weights, and what the entries were derived from.

    Why one function: :func:`write_precomputed` and a source given to the runner
    (:class:`~avpipe.pipeline.given.Given`, e.g. the crop tree) must record the same facts."""
    return Fingerprint(value or precomputed_fingerprint(stage_name, config, version), stage_name, version,
                       canonical_json(dict(config)), None, dict(upstream or {}))


def write_precomputed(cache_root: str | Path, stage_name: str, fingerprint: str | None,
                      results: Mapping[str, StageResult], keys: Mapping[str, str],
                      config: Mapping[str, Any], *, version: str = "precomputed",
                      shard_size: int = 64, upstream: Mapping[str, str] | None = None) -> str:
    """Store ``results`` (content id -> StageResult) as entries of ``stage_name``.

    ``keys`` maps content id -> video key; ``fingerprint=None`` derives one from the config
    (:func:`precomputed_fingerprint`). Results are written ``shard_size`` videos per shard, each
    shard committed in its own transaction (a crash leaves complete shards indexed, nothing
    half-written). Returns the fingerprint.
    """
    check_stage_name(stage_name)
    fp = precomputed(stage_name, config, version, upstream, fingerprint)
    fp_value = fp.value
    root = Path(cache_root).expanduser().absolute()
    prov = entry_provenance(fp)
    with CacheLock(root, purpose="ingest"), Cache(root, create=True) as cache:
        known = {c for _, c in cache.index.videos()}
        new = [(f"precomputed:{keys[c]}", keys[c], -1, -1, -(i + 1), c)
               for i, c in enumerate(results) if c not in known]
        if new:
            cache.index.upsert_files(new)
        cache.index.add_fingerprint(fp)
        items = list(results.items())
        for i in range(0, len(items), max(1, shard_size)):
            rec = write_shard(root, stage_name, fp_value, items[i:i + shard_size], prov)
            cache.index.commit_task(fp_value, stage_name, rec, [])
    return fp_value

