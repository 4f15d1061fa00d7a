"""Read-only views for ``avpipe status`` and ``avpipe inspect`` (JSON-able dicts).

Both only read: no lock, no index writes, so they work while an ``extract`` runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.discover import identify, iter_video_files
from avpipe.pipeline.fingerprint import stage_fingerprint, upstream_names
from avpipe.pipeline.plan import PlanError, select_stages
from avpipe.pipeline.settings import PipelineConfig
from avpipe.pipeline.stage import Runtime, get_stage_class
from avpipe.pipeline.store import Cache


def status(cache: Cache, videos_root: str | Path | None = None, config: PipelineConfig | None = None,
           stages: list[str] | None = None) -> dict[str, Any]:
    """Per stage: done / failed / missing for the current config's fingerprints.

    The batch is the videos under ``videos_root`` (content ids from the memo, hashing files it
    has not seen without recording them), or every video the cache knows.
    """
    config = config or PipelineConfig()
    try:
        config.validate()
        order, _ = select_stages(stages)
    except (KeyError, ValueError) as e:
        raise PlanError(str(e)) from e
    if videos_root is not None:
        found = identify(list(iter_video_files(videos_root)), cache.index.file_memo())
        batch = {v.content_id for v in found}
    else:
        batch = {c for _, c in cache.index.videos()}
    out_stages = []
    fps: dict[str, str] = {}
    for name in order:
        cls = get_stage_class(name)
        row: dict[str, Any] = {"stage": name, "fingerprint": None, "done": 0, "failed": 0,
                               "missing": len(batch), "unavailable": None}
        if any(u not in fps for u in upstream_names(cls)):
            row["unavailable"] = "an upstream stage is unavailable"
        else:
            try:
                fp = stage_fingerprint(cls(config.stage_config(name), Runtime()), fps).value
            except Exception as e:  # weights missing
                row["unavailable"] = f"{type(e).__name__}: {e}"
            else:
                fps[name] = fp
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
    for e in cache.index.entries(content_id=cid):
        ent = cache.read(e["stage"], cid, fingerprint=e["fingerprint"])
        item: dict[str, Any] = {"stage": e["stage"], "fingerprint": e["fingerprint"],
                                "rows": e["n_rows"], "shard": e["shard"], "created": e["created"]}
        try:
            data = ent.data
            mask = ent.mask
            item.update(shape=list(np.shape(data)), dtype=str(np.asarray(data).dtype),
                        dims=int(np.shape(data)[1]) if np.ndim(data) > 1 else (1 if np.ndim(data) == 1 else 0),
                        mask_coverage=float(mask.mean()) if mask.size else None,
                        attrs=ent.attrs, extras=ent.extras)
        except Exception as ex:  # corrupt shard: say so, `cache verify` drops it
            item["error"] = f"{type(ex).__name__}: {ex}"
        entries.append(item)
    failures = [{"stage": f.stage, "fingerprint": f.fingerprint, "error_type": f.error_type,
                 "message": f.message, "time": f.time, "transient": f.transient}
                for f in cache.index.failures(content_id=cid)]
    return {"content_id": cid, "keys": cache.index.keys_for(cid), "entries": entries, "failures": failures}
