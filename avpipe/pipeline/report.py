"""Read-only views for ``avpipe status`` and ``avpipe inspect`` (JSON-able dicts).

Both only read: no lock, no index writes, no weights prepared (:func:`read_only`), so they work
while an ``extract`` runs and on a cache (or home folder) nobody may write.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.discover import identify, iter_video_files
from avpipe.pipeline.plan import PlanError, config_stages, fingerprints, select_stages
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.sideeffects import read_only
from avpipe.pipeline.stage import Runtime
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import ShardMissing


def status(cache: Cache, videos_root: str | Path | None = None, config: PipelineConfig | None = None,
           stages: list[str] | None = None) -> dict[str, Any]:
    """Per stage: done / failed / missing for the current config's fingerprints.

    The batch is the videos under ``videos_root`` (content ids from the memo, hashing files it
    has not seen without recording them), or every video the cache knows.
    """
    config = config or PipelineConfig()
    try:
        config.validate()
        order, _ = select_stages(stages or config_stages(config))
    except (KeyError, ValueError) as e:
        raise PlanError(str(e)) from e
    if videos_root is not None:
        found = identify(list(iter_video_files(videos_root)), cache.index.file_memo())
        batch = {v.content_id for v in found}
    else:
        batch = {c for _, c in cache.index.videos()}
    out_stages = []
    with read_only():  # weights are checksummed, never downloaded or converted
        nodes = fingerprints(order, config, Runtime())
    for name in order:
        node = nodes[name]
        row: dict[str, Any] = {"stage": name, "fingerprint": None, "done": 0, "failed": 0,
                               "missing": len(batch), "unavailable": node.unavailable}
        if node.fingerprint is not None:
            fp = node.fingerprint.value
            done = cache.index.done(fp) & batch
            failed = (cache.index.failed(fp) & batch) - done
            row.update(fingerprint=fp, done=len(done), failed=len(failed),
                       missing=len(batch) - len(done) - len(failed))
        out_stages.append(row)
    return {"cache": str(cache.root), "videos": str(Path(videos_root).absolute()) if videos_root else None,
            "n_videos": len(batch), "stages": out_stages}


def inspect_video(cache: Cache, video: str) -> dict[str, Any]:
    """Every cached entry and failure of one video (key, content id, or a file path)."""
    try:
        cid = cache.resolve_video(video)
    except KeyError:
        p = Path(video)
        if not p.is_file():
            raise
        from avpipe.pipeline.discover import content_hash

        cid = content_hash(p)
    entries = []
    missing_shards: list[str] = []
    for e in cache.index.entries(content_id=cid):
        item: dict[str, Any] = {"stage": e["stage"], "fingerprint": e["fingerprint"],
                                "rows": e["n_rows"], "shard": e["shard"], "created": e["created"]}
        try:
            ent = cache.read(e["stage"], cid, fingerprint=e["fingerprint"])
        except ShardMissing as ex:
            item["error"] = str(ex)
            missing_shards.append(e["shard"])
            entries.append(item)
            continue
        try:
            data = ent.data
            mask = ent.mask
            item.update(shape=list(np.shape(data)), dtype=str(np.asarray(data).dtype),
                        dims=int(np.shape(data)[1]) if np.ndim(data) > 1 else (1 if np.ndim(data) == 1 else 0),
                        mask_coverage=float(mask.mean()) if mask.size else None,
                        attrs=ent.attrs, extras=ent.extras, packages=getattr(ent, "packages", None))
        except Exception as ex:  # corrupt shard: say so, `cache verify` drops it
            item["error"] = f"{type(ex).__name__}: {ex}"
        entries.append(item)
    failures = [{"stage": f.stage, "fingerprint": f.fingerprint, "error_type": f.error_type,
                 "message": f.message, "time": f.time,
                 "transient": f.transient} for f in cache.index.failures(content_id=cid)]
    return {"content_id": cid, "keys": cache.index.keys_for(cid), "entries": entries, "failures": failures,
            "missing_shards": missing_shards}
