"""``avpipe cache verify --recompute N``: recompute a random sample of entries and compare.

Why: ``cache verify`` proves the bytes on disk are the bytes committed; it cannot tell whether this
machine would still compute the same features. A package upgrade (opencv's resize, numpy's
reductions, a new torch kernel) changes features silently; recomputing a few entries from their
videos and comparing them with what is stored shows it, and each entry's recorded package
versions (``packages_json``) name the packages that changed.

Read-only: nothing is written or dropped. An entry that cannot be recomputed here (its video is
gone, its stage is not registered or has another version now, a precomputed import) is reported
as skipped with the reason.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.chunks import dense
from avpipe.pipeline.config_schema import config_from_dict
from avpipe.pipeline.entry import ShardEntry
from avpipe.pipeline.stage import Runtime, VideoRef, stage_registry
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import PROBE
from avpipe.provenance import changed_packages


@dataclass
class Recomputed:
    """One sampled entry: ``status`` same | differs | skipped | failed, and why."""

    stage: str
    fingerprint: str
    content_id: str
    key: str
    status: str
    detail: str = ""
    changed: list[str] = field(default_factory=list)  # "name old -> new" since the entry was written

    def line(self) -> str:
        what = f"{self.stage} {self.fingerprint[:12]} {self.key}"
        s = f"{self.status.upper():<8} {what}" + (f": {self.detail}" if self.detail else "")
        if self.status == "differs":
            s += ("; packages changed since it was computed: " + ", ".join(self.changed) if self.changed
                  else "; no recorded package changed (or versions were not recorded)")
        return s


def sample_entries(cache: Cache, n: int, seed: int | None = None, stage: str | None = None) -> list[dict[str, Any]]:
    rows = cache.index.entries(stage=stage)
    rng = random.Random(seed)
    return rng.sample(rows, min(n, len(rows)))


def recompute(cache: Cache, n: int, *, seed: int | None = None, stage: str | None = None,
              runtime: Runtime | None = None) -> list[Recomputed]:
    """Recompute ``n`` random entries (of ``stage``, or any) and compare each with the stored one."""
    runtime = runtime or Runtime()
    return [recompute_entry(cache, row, runtime) for row in sample_entries(cache, n, seed, stage)]


def _video(cache: Cache, cid: str) -> tuple[str, Path | None]:
    keys = cache.index.keys_for(cid)
    for p in cache.index.paths_for(cid):
        if Path(p).is_file():
            return (keys[0] if keys else p), Path(p)
    return (keys[0] if keys else cid[:12]), None


def _entry(cache: Cache, stage: str, fp: str, cid: str, key: str) -> ShardEntry | None:
    hit = cache.index.entry(fp, cid)
    if hit is None:
        return None
    return ShardEntry(cache.root / hit[0], stage=stage, fingerprint=fp, content_id=cid, key=key)


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _difference(stored: Any, new: Any) -> str:
    a, b = np.asarray(stored), np.asarray(new)
    if a.shape != b.shape:
        return f"shape {a.shape} stored, {b.shape} now"
    if a.dtype.kind in "fciub" and b.dtype.kind in "fciub" and a.size:
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        rows = int(np.any(d.reshape(len(d), -1) > 0, axis=1).sum()) if a.ndim else int(d > 0)
        return f"{rows} of {len(a) if a.ndim else 1} rows differ, max |diff| {np.nanmax(d):.3g}"
    return "content differs"


def recompute_entry(cache: Cache, row: dict[str, Any], runtime: Runtime) -> Recomputed:
    from avpipe.pipeline.stage_memo import loaded_stage

    stage_name, fp, cid = row["stage"], row["fingerprint"], row["content_id"]
    key, path = _video(cache, cid)
    out = Recomputed(stage_name, fp, cid, key, "skipped")
    info = cache.index.fingerprint_row(fp) or {}
    cls = stage_registry().get(stage_name)
    if cls is None:
        out.detail = "stage not registered here (a plugin or precomputed import)"
        return out
    if str(cls.version) != str(info.get("version")):
        out.detail = f"stage version is {cls.version} now, the entry was computed by version {info.get('version')}"
        return out
    if path is None:
        out.detail = "its video file is not where it was found (move it back or run extract --videos on it)"
        return out
    stored = _entry(cache, stage_name, fp, cid, key)
    if stored is None:
        out.detail = "entry vanished from the index"
        return out
    try:
        config = config_from_dict(cls.config_cls, json.loads(info.get("config_json") or "{}"))
        inputs: dict[str, ShardEntry] = {}
        for up, ufp in (info.get("upstream") or {}).items():
            e = _entry(cache, up, ufp, cid, key)
            if e is None:
                out.detail = f"its input {up}@{ufp[:12]} is no longer cached"
                return out
            inputs[up] = e
        if PROBE in inputs:
            ts = np.asarray(inputs[PROBE].data, dtype=np.float64)
            for e in inputs.values():
                e.frame_times = ts
        stage = loaded_stage(cls, config, runtime, fp)
        res = dense(stage.compute(VideoRef(key, cid, path), inputs))
    except Exception as e:  # noqa: BLE001 - reported per entry; the sample goes on
        out.status, out.detail = "failed", f"{type(e).__name__}: {e}"
        return out
    new_mask = res.mask if res.mask is not None else np.ones(len(np.asarray(res.data)), bool)
    same_data, same_mask = _same(stored.data, res.data), _same(stored.mask, np.asarray(new_mask, bool))
    if same_data and same_mask:
        out.status = "same"
        return out
    out.status = "differs"
    out.detail = "data: " + _difference(stored.data, res.data) if not same_data else "mask differs"
    if stored.packages is not None:
        out.changed = changed_packages(stored.packages)
    return out
