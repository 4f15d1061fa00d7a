"""Sweeps: a grid of training runs on one cache, one run folder per cell, resumable.

A sweep is a base :class:`~avpipe.fusion.config.TrainConfig` (as a dict) and a grid — lists of
values for some of its fields (``fusion``, ``features``, ``seed``, ``lr``, ``window``,
``model.hidden`` …). Every combination is a *cell*; a cell trains into
``<out>/<name>`` where ``name`` is built from the grid values and a short hash of the cell's whole
config (:func:`cell_hash`), so the same cell always lands in the same folder.

Resumable: when a cell's training returns, ``completed.json`` is written atomically into its
folder. A rerun skips cells with that marker, resumes a cell that has a checkpoint but no marker
(the trainer's own ``--resume``, which ends with the metrics of an uninterrupted run) and starts
the others. Killing a sweep (even with SIGKILL) therefore loses at most the epoch in progress.

Bank once per process: :class:`BankCache` keeps the loaded, normalised train/val banks of the
last split it served. Cells that share the labelled videos and the split (the usual case: models ×
seeds × options on one corpus) reuse them; the bank holds the *union* of the features all those
cells read (planned up front, :func:`plan_unions`), and each run gets a view with only its own
modalities. Normalisation statistics are per modality over the training rows, so a view's
statistics are exactly those the run would compute alone — a sweep cell trains to the same
metrics as the same config trained by ``avpipe train``.

Several processes (``jobs > 1``): cells go to a joblib/loky process pool, sorted so that cells
sharing a bank are adjacent; a worker keeps its :class:`BankCache` between cells (loky reuses
workers), so each worker loads a bank about once. See docs/experiments.md for why joblib.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.fusion.progress import SweepProgress, fit_line, fmt_duration
from avpipe.pipeline.config_schema import canonical_json, config_keys, load_config_file

MARKER = "completed.json"
MANIFEST = "sweep.json"
#: Config fields that say where/how a run executes, not what it computes: not in a cell's hash.
RUNTIME_FIELDS = ("out", "device", "num_threads")
#: Options that name files or folders: relative values in a sweep file mean relative to the file.
PATH_FIELDS = ("labels", "cache", "split_file")
#: Grid keys whose values appear first (in this order) in a cell's folder name.
NAME_ORDER = ("fusion", "features")


class SweepError(ValueError):
    """A bad sweep specification (unknown option, empty grid, bad value): a usage error."""


# ----------------------------------------------------------------------------- spec and cells
@dataclass
class SweepSpec:
    """What to sweep: ``base`` options for every cell, ``grid`` key -> values, output root."""

    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    out: str = "runs/sweep"
    #: base path option -> the folder its relative value is resolved against (the sweep file's).
    #: The value as written stays in the cell's config and hash, so a sweep's folder names do not
    #: depend on where it was started from.
    relative_to: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "SweepSpec":
        """A TOML/JSON file with tables ``[sweep]`` (out), ``[base]`` and ``[grid]``."""
        try:
            d = load_config_file(path)
        except (OSError, ValueError) as e:
            raise SweepError(f"sweep file {path}: {e}") from e
        unknown = sorted(set(d) - {"sweep", "base", "grid"})
        if unknown:
            raise SweepError(f"sweep file {path}: unknown table(s) {unknown}; use [sweep], [base], [grid]")
        bad = sorted(set(d.get("sweep", {})) - {"out"})
        if bad:
            raise SweepError(f"sweep file {path}: unknown key(s) {bad} in [sweep]; it takes: out")
        grid = {}
        for k, v in dict(d.get("grid", {})).items():
            grid[k] = list(v) if isinstance(v, list) else [v]
        here = Path(path).expanduser().absolute().parent
        base = dict(d.get("base", {}))
        rel = {k: str(here) for k in PATH_FIELDS
               if isinstance(base.get(k), str) and base[k] and not Path(base[k]).expanduser().is_absolute()}
        out = Path(str(d.get("sweep", {}).get("out", "runs/sweep"))).expanduser()
        return cls(base=base, grid=grid, out=str(out if out.is_absolute() else here / out), relative_to=rel)

    def resolve(self, key: str, value: Any) -> Any:
        """``value`` of base option ``key`` as a path usable from here (relative to the sweep file
        when it came from one), other values as they are."""
        if key in self.relative_to and isinstance(value, str) and value:
            return str(Path(self.relative_to[key]) / value)
        return value



@dataclass(frozen=True)
class Cell:
    """One grid point: its folder name, its full config (a TrainConfig dict without ``out``) and
    the grid values that made it."""

    name: str
    config: dict[str, Any]
    values: tuple[tuple[str, Any], ...]
    hash: str
    paths: tuple[tuple[str, str], ...] = ()  # path options resolved against the sweep file

    def train_config(self, out: str | Path) -> Any:
        from avpipe.fusion.config import TrainConfig

        return TrainConfig.from_dict({**self.config, **dict(self.paths), "out": str(out)})


def _set_key(d: dict[str, Any], key: str, value: Any) -> None:
    """``model.hidden`` sets ``d["model"]["hidden"]``; other keys are TrainConfig fields."""
    if key.startswith("model."):
        d["model"] = {**dict(d.get("model") or {}), key[len("model."):]: value}
    else:
        d[key] = value


def _check_keys(keys: Sequence[str], where: str) -> None:
    from avpipe.fusion.config import TrainConfig

    fields = set(config_keys(TrainConfig))
    bad = [k for k in keys if not (k.startswith("model.") and len(k) > 6) and k not in fields]
    if bad:
        raise SweepError(f"{where}: unknown option(s) {bad}; use TrainConfig fields "
                         f"({', '.join(sorted(fields))}) or model.OPTION")
    if "out" in keys:
        raise SweepError(f"{where}: 'out' is set per cell; give the sweep's output folder instead")


def cell_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the cell's canonical config without the runtime fields (first 8 hex digits)."""
    sem = {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}
    return hashlib.sha256(canonical_json(sem).encode()).hexdigest()[:8]


def _slug(key: str, value: Any) -> str:
    if key == "features":
        v = value if isinstance(value, str) else ",".join(f"{m}={s}" for m, s in dict(value).items())
        text = v.replace(",", "+")
    elif key == "fusion":
        text = str(value)
    else:
        short = {"seed": "s", "window": "w", "hop": "h", "batch_size": "bs", "epochs": "ep"}.get(key)
        text = f"{short or key.replace('model.', '')}{json.dumps(value) if not isinstance(value, str) else value}"
    return re.sub(r"[^A-Za-z0-9.=+]+", "-", text).strip("-")[:60] or "x"


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell of the grid, in a fixed order (grid keys: fusion, features, others sorted, seed
    last), each with its deterministic folder name. Duplicate cells (same config once the feature
    set is reduced to the modalities the model reads) appear once."""
    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.models import get_model_class
    from avpipe.fusion.source import FeatureSet

    _check_keys(list(spec.base), "base options")
    _check_keys(list(spec.grid), "grid")
    for k, vs in spec.grid.items():
        if not vs:
            raise SweepError(f"grid {k!r} has no values")
    keys = [k for k in NAME_ORDER if k in spec.grid]
    keys += sorted(k for k in spec.grid if k not in NAME_ORDER and k != "seed")
    keys += ["seed"] if "seed" in spec.grid else []
    cells: list[Cell] = []
    seen: set[str] = set()
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        cfg = json.loads(json.dumps(spec.base))  # deep copy, JSON-plain
        cfg.pop("out", None)
        for k, v in zip(keys, combo):
            if k == "features":
                try:
                    v = FeatureSet.parse(v or None).to_dict()
                except ValueError as e:
                    raise SweepError(f"grid features {v!r}: {e}") from e
            _set_key(cfg, k, v)
        try:
            TrainConfig.from_dict(cfg)
            cls = get_model_class(str(cfg.get("fusion", TrainConfig.fusion)))
            # the features the model will read (what the trainer does too): a feature set naming
            # modalities the model ignores is the same experiment as one that does not
            mods = cls.required_modalities(cfg.get("model") or {})
            cfg["features"] = FeatureSet.parse(cfg.get("features") or None, mods).subset(mods).to_dict()
        except (ValueError, TypeError, KeyError) as e:
            raise SweepError(f"cell {dict(zip(keys, combo))}: {e.args[0] if e.args else e}") from e
        h = cell_hash(cfg)
        if h in seen:
            continue
        seen.add(h)
        name = "-".join([_slug(k, v) for k, v in zip(keys, combo)] + [h])
        paths = tuple((k, spec.resolve(k, cfg[k])) for k in PATH_FIELDS
                      if k in spec.relative_to and k in cfg and spec.resolve(k, cfg[k]) != cfg[k])
        cells.append(Cell(name, cfg, tuple(zip(keys, combo)), h, paths))
    return cells


# ----------------------------------------------------------------------------- shared banks
def _token(stage: str, fp: str) -> str:
    return f"{stage}@{fp}"


def split_key(prep: Any, cfg: Any, device: Any) -> str:
    """What makes two runs' banks the same (modalities aside): the labelled tracks of each split,
    where the labels and features come from, and how rows are loaded."""
    d = {"train": [(r.name, r.video) for r in prep.train], "val": [(r.name, r.video) for r in prep.val],
         "labels": str(cfg.labels), "split_file": str(cfg.split_file), "cache": str(cfg.cache),
         "device": str(device), "dtype": str(cfg.feature_dtype), "tolerance": int(cfg.label_tolerance)}
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()


class BankCache:
    """Loaded, normalised train/val banks of recent splits, handed to :func:`train` as views.

    ``unions``: split key -> {token: (stage, fingerprint)} — every feature the cells of that split
    will read (:func:`plan_unions`), so the first cell loads them all and the others load nothing.
    ``loads`` counts bank loads (train + val = 2 per split) for tests and the summary.
    """

    def __init__(self, unions: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
                 max_splits: int = 1) -> None:
        self.unions = {k: dict(v) for k, v in (unions or {}).items()}
        self.max_splits = max(1, int(max_splits))
        self._entries: dict[tuple[str, frozenset[str]], tuple[Any, Any, Any]] = {}
        self.loads = 0
        self.hits = 0

    def add_union(self, key: str, fingerprints: Mapping[str, tuple[str, str]]) -> None:
        self.unions.setdefault(key, {}).update(fingerprints)

    def _rows_agree(self, source: Any, fingerprints: Mapping[str, tuple[str, str]], videos: Sequence[str]) -> bool:
        """Whether every feature has the same row count per video (then one bank serves them all
        with exactly the rows each run would load alone)."""
        from avpipe.fusion import data

        if len(fingerprints) < 2:
            return True
        for v in videos:
            if len({data.source_rows(source, ref, v) for ref in fingerprints.values()}) > 1:
                return False
        return True

    def providers(self, source: Any, prep: Any, cfg: Any, device: Any) -> tuple[Any, Any, Any] | None:
        """(train provider, val provider, stats) for this run, or None when the run should load
        its own (the split does not fit the memory budget: the trainer then chunks)."""
        from avpipe.fusion import data

        key = split_key(prep, cfg, device)
        mine = {_token(*ref): ref for ref in prep.fingerprints.values()}
        for (k, toks), entry in self._entries.items():
            if k == key and set(mine) <= toks:
                self.hits += 1
                return self._views(entry, prep)
        union = {**self.unions.get(key, {}), **mine}
        videos = sorted({r.video for r in prep.train + prep.val})
        if not self._rows_agree(source, union, videos):
            union = mine
        rows = sum(data.source_rows(source, next(iter(union.values())), r.video) for r in prep.train + prep.val)
        dims = {t: (d, dt) for t, (d, dt) in data.probe_dims(source, union, prep.train[0].video).items()}
        if cfg.feature_dtype != "auto":
            import numpy as np

            dims = {t: (d, np.dtype(cfg.feature_dtype)) for t, (d, _) in dims.items()}
        budget = (int(cfg.memory_budget_gb * (1 << 30)) if cfg.memory_budget_gb
                  else data.available_memory_bytes(device) // 2)
        if data.estimate_bytes(rows, dims) > budget:
            return None
        kw = dict(device=device, dtype=cfg.feature_dtype, tolerance=cfg.label_tolerance)
        tr = data.load_bank(source, union, prep.train, **kw)
        va = data.load_bank(source, union, prep.val, **kw)
        self.loads += 2
        stats = data.compute_stats([tr])
        tr.set_stats(stats)
        va.set_stats(stats)
        while len(self._entries) >= self.max_splits:
            self._entries.pop(next(iter(self._entries)))
        entry = (tr, va, stats)
        self._entries[(key, frozenset(union))] = entry
        return self._views(entry, prep)

    @staticmethod
    def _views(entry: tuple[Any, Any, Any], prep: Any) -> tuple[Any, Any, Any]:
        from avpipe.fusion.data import FeatureBank, InMemoryBanks, Stats

        tr, va, stats = entry
        tok = {m: _token(*ref) for m, ref in prep.fingerprints.items()}

        def view(b: FeatureBank) -> FeatureBank:
            return FeatureBank(names=b.names, videos=b.videos, x={m: b.x[t] for m, t in tok.items()},
                               valid={m: b.valid[t] for m, t in tok.items()}, y=b.y, y_valid=b.y_valid,
                               offsets=b.offsets, device=b.device, _norm={m: b._norm[t] for m, t in tok.items()})

        st = Stats({m: stats.mean[t] for m, t in tok.items()}, {m: stats.std[t] for m, t in tok.items()})
        return InMemoryBanks(view(tr)), InMemoryBanks(view(va)), st


# ----------------------------------------------------------------------------- per process state
_SOURCES: dict[str, Any] = {}
_BANKS: BankCache | None = None


def _source(cache: str) -> Any:
    """One FeatureSource per cache root per process (its index lookups are memoised)."""
    from avpipe.fusion.source import CacheSource

    if cache not in _SOURCES:
        _SOURCES[cache] = CacheSource(cache)
    return _SOURCES[cache]


def plan_unions(cells: Sequence[Cell], root: Path) -> tuple[dict[str, dict[str, tuple[str, str]]], dict[str, str]]:
    """Resolve each cell's split and features once (no feature data is read): split key -> every
    feature its cells need, and cell name -> split key (to keep cells of one bank together).
    A cell that cannot be prepared (missing features, bad labels) is left out here; it fails, with
    its own message, when it runs."""
    from avpipe.fusion.inference import resolve_device
    from avpipe.fusion.prepare import prepare

    unions: dict[str, dict[str, tuple[str, str]]] = {}
    keys: dict[str, str] = {}
    for c in cells:
        cfg = c.train_config(root / c.name).resolved()
        try:
            prep = prepare(cfg, _source(cfg.cache))
        except Exception:  # noqa: BLE001 - reported when the cell runs
            continue
        k = split_key(prep, cfg, resolve_device(cfg.device))
        keys[c.name] = k
        unions.setdefault(k, {}).update({_token(*ref): ref for ref in prep.fingerprints.values()})
    return unions, keys


def is_finished(run_dir: Path, cell: Cell) -> bool:
    """A cell is finished when its folder holds a completion marker for the same cell hash."""
    p = run_dir / MARKER
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("hash") == cell.hash
    except (OSError, ValueError):
        return False


def run_cell(cell: Cell, root: Path, *, banks: BankCache | None = None,
             log: Callable[[str], None] = print, source: Any = None) -> dict[str, Any]:
    """Train one cell (resuming its checkpoint if any) and write its completion marker.

    Returns ``{"name", "status": "done"|"skipped"|"elsewhere"|"failed", "seconds", "best"?,
    "error"?, "holder"?}``; a failure is returned, not raised, so that one bad cell does not stop
    the sweep. The cell is claimed first (:mod:`avpipe.fusion.claims`): a cell another sweep holds
    now is ``elsewhere`` (not trained here), one whose claimant died is claimed and resumed."""
    from avpipe.fusion.claims import claim, claimed_by

    run_dir = root / cell.name
    if is_finished(run_dir, cell):
        return _finished(cell, run_dir)
    mine = claim(run_dir)
    if mine is None:  # another sweep (process or machine) is training it now
        return {"name": cell.name, "status": "elsewhere", "seconds": 0.0, "holder": claimed_by(run_dir)}
    with mine:
        if is_finished(run_dir, cell):  # finished by another sweep between our check and our claim
            return _finished(cell, run_dir)
        return _train_cell(cell, run_dir, banks=banks, log=log, source=source)


def _finished(cell: Cell, run_dir: Path) -> dict[str, Any]:
    return {"name": cell.name, "status": "skipped", "seconds": 0.0,
            "best": json.loads((run_dir / MARKER).read_text()).get("best", {})}


def _train_cell(cell: Cell, run_dir: Path, *, banks: BankCache | None, log: Callable[[str], None],
                source: Any) -> dict[str, Any]:
    """Train a claimed cell and write its marker (see :func:`run_cell`)."""
    import warnings

    from avpipe.fusion.run import RunDir
    from avpipe.fusion.train import train
    from avpipe.pipeline.atomic import atomic_write_text

    t0 = time.perf_counter()
    cfg = cell.train_config(run_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. unmatched label tracks: said once by the plan
            s = train(cfg, source=source if source is not None else _source(cfg.cache),
                      resume=RunDir(run_dir).has_run(), log=log, bank=banks)  # a cell killed early resumes too
    except Exception as e:  # noqa: BLE001 - one failed cell is reported; the sweep goes on
        msg = f"{type(e).__name__}: {e}"
        with_tb = traceback.format_exc()
        try:  # the full story next to the run, the one-line reason in the summary
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "error.txt", with_tb)
        except OSError:
            pass
        return {"name": cell.name, "status": "failed", "seconds": time.perf_counter() - t0, "error": msg}
    dt = time.perf_counter() - t0
    marker = {"name": cell.name, "hash": cell.hash, "values": [[k, v] for k, v in cell.values],
              "best": s["best"], "best_epoch": s["best_epoch"], "epochs_run": s["epochs_run"],
              "seconds": round(dt, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(run_dir / MARKER, json.dumps(marker, indent=2, sort_keys=True, default=float) + "\n")
    return {"name": cell.name, "status": "done", "seconds": dt, "best": s["best"]}


def _worker(cell: Cell, root: str, unions: dict[str, dict[str, tuple[str, str]]], threads: int | None,
            prefix: str) -> dict[str, Any]:
    """A loky worker's entry: one cell, with this process's bank cache (kept between cells)."""
    import sys

    import torch

    from avpipe.pipeline.loky_memory import keep_worker_memory

    keep_worker_memory()  # its banks are not a leak: the worker must not be restarted for them
    global _BANKS
    if _BANKS is None:
        _BANKS = BankCache()
    for k, v in unions.items():
        _BANKS.add_union(k, v)
    if threads is None:  # on a Dask worker: that machine's cores, not the driver's
        from avpipe.pipeline.runner import dask_worker_threads

        threads = dask_worker_threads()
    if threads and not cell.config.get("num_threads"):
        torch.set_num_threads(threads)
    loads = _BANKS.loads
    r = run_cell(cell, Path(root), banks=_BANKS,
                 log=lambda m: print(fit_line(f"{prefix} {m}"), file=sys.stderr, flush=True))
    r["bank_loads"] = _BANKS.loads - loads
    return r


# ----------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    out: Path
    results: list[dict[str, Any]]
    bank_loads: int
    seconds: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def render(self) -> str:
        """The final summary: one line per cell, then the totals."""
        w = max([len(r["name"]) for r in self.results] + [4])
        lines = [f"{'cell':<{w}}  {'status':<7} {'V':>7} {'A':>7} {'mean':>7} {'time':>7}"]
        for r in self.results:
            b = r.get("best") or {}
            f = lambda k: f"{b[k]:7.4f}" if k in b else f"{'-':>7}"  # noqa: E731
            lines.append(f"{r['name']:<{w}}  {r['status']:<7} {f('val_ccc_valence')} {f('val_ccc_arousal')} "
                         f"{f('val_ccc_mean')} {fmt_duration(r['seconds']):>7}")
            if r["status"] == "failed":
                lines.append(f"    error: {r['error']}")
        n = {s: sum(r["status"] == s for r in self.results) for s in ("done", "skipped", "elsewhere", "failed")}
        for r in self.results:
            if r["status"] == "elsewhere":
                lines.append(f"    {r['name']}: being trained by {r.get('holder', 'another process')}")
        lines.append(f"{len(self.results)} cells: {n['done']} trained, {n['skipped']} already finished, "
                     + (f"{n['elsewhere']} running elsewhere, " if n["elsewhere"] else "")
                     + f"{n['failed']} failed; bank loads {self.bank_loads}; {fmt_duration(self.seconds)} "
                     f"-> {self.out}")
        return "\n".join(lines)


def _write_manifest(spec: SweepSpec, cells: Sequence[Cell], out: Path) -> None:
    from avpipe.pipeline.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    m = {"base": spec.base, "grid": spec.grid,
         "cells": [{"name": c.name, "hash": c.hash, "values": [[k, v] for k, v in c.values]} for c in cells]}
    atomic_write_text(out / MANIFEST, json.dumps(m, indent=2, sort_keys=True, default=str) + "\n")


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) -> ``(K, N)``; a SweepError for anything else."""
    k, slash, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = 0
    if not slash or nn < 1 or not 1 <= kk <= nn:
        raise SweepError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8 "
                         "(SLURM: --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT)")
    return kk, nn


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Cells K, K+N, K+2N, … (1-based, in grid order) of ``cells``: shard K of N. Grid order is
    fixed, so N jobs given 1/N … N/N cover every cell exactly once without talking to each other."""
    if shard is None:
        return list(cells)
    k, n = shard
    return [c for i, c in enumerate(cells) if i % n == k - 1]


def run_sweep(spec: SweepSpec, *, jobs: int = 1, log: Callable[[str], None] = print,
              banks: BankCache | None = None, backend: str = "loky", scheduler: str | None = None,
              scheduler_file: str | None = None, shard: tuple[int, int] | None = None) -> SweepResult:
    """Train every unfinished cell of ``spec`` (see the module docstring).

    ``backend="dask"``: cells are tasks on the Dask cluster at ``scheduler``/``scheduler_file``
    (each worker process keeps its bank between cells). ``shard=(K, N)``: only shard K of N of
    the grid (:func:`shard_cells`). Either way each cell is claimed before it trains, so sweeps
    sharing ``spec.out`` never train one cell twice."""
    t0 = time.perf_counter()
    all_cells = expand(spec)
    if not all_cells:
        raise SweepError("the sweep has no cells")
    if backend not in ("loky", "dask"):
        raise SweepError(f"unknown backend {backend!r}: use loky or dask")
    if backend == "dask" and not (scheduler or scheduler_file):
        raise SweepError("--backend dask needs --scheduler ADDR or --scheduler-file FILE")
    cells = shard_cells(all_cells, shard)
    out = Path(spec.out)
    _write_manifest(spec, all_cells, out)
    todo = [c for c in cells if not is_finished(out / c.name, c)]
    prog = SweepProgress(total=len(cells), jobs=max(1, jobs))
    results: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c not in todo:
            results[c.name] = run_cell(c, out)  # reads the marker only
            prog.skipped += 1
            prog.finished(True, trained=False)
    where = (f" on the Dask cluster {scheduler or scheduler_file}" if backend == "dask"
             else f" on {jobs} processes" if jobs > 1 else "")
    log(prog.line(f"{len(todo)} to train in {out}" + where
                  + (f" (shard {shard[0]}/{shard[1]} of {len(all_cells)} cells)" if shard else "")))
    unions, keys = plan_unions(todo, out) if todo else ({}, {})
    todo.sort(key=lambda c: keys.get(c.name, ""))  # cells of one bank together (stable: grid order inside)
    loads = 0
    index = {c.name: i + 1 for i, c in enumerate(cells)}

    def note(r: dict[str, Any]) -> str:
        b = r.get("best") or {}
        what = (f"mean {b['val_ccc_mean']:.4f}" if r["status"] == "done" and "val_ccc_mean" in b
                else f"being trained by {r.get('holder')}" if r["status"] == "elsewhere"
                else f"FAILED {r.get('error', '')}")
        return f"{r['name']}: {what} ({fmt_duration(r['seconds'])})"

    if backend == "dask" and todo:
        for r in _dask_cells(todo, out, unions, scheduler, scheduler_file,
                             {c.name: f"[{index[c.name]}/{len(cells)} {c.name[:24]}]" for c in todo}):
            results[r["name"]] = r
            loads += int(r.get("bank_loads", 0))
            prog.finished(r["status"] != "failed", trained=r["status"] == "done")
            log(prog.line(note(r)))
    elif jobs <= 1:
        bc = banks if banks is not None else BankCache(unions)
        for k, v in unions.items():
            bc.add_union(k, v)
        for c in todo:
            prog.running = 1
            log(prog.line(f"start {c.name}"))
            prefix = f"[{index[c.name]}/{len(cells)}]"
            r = run_cell(c, out, banks=bc, log=lambda m, p=prefix: log(fit_line(f"{p} {m}")))
            prog.running = 0
            prog.finished(r["status"] != "failed", trained=r["status"] == "done")
            results[c.name] = r
            log(prog.line(note(r)))
        loads = bc.loads
    elif todo:
        from joblib import Parallel, delayed

        from avpipe.pipeline.threads import default_num_threads

        threads = default_num_threads(jobs)  # the free cores shared among the workers
        prog.running = min(jobs, len(todo))
        gen = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(
            delayed(_worker)(c, str(out), unions, threads, f"[{index[c.name]}/{len(cells)} {c.name[:24]}]")
            for c in todo)
        for r in gen:
            results[r["name"]] = r
            loads += int(r.get("bank_loads", 0))
            prog.finished(r["status"] != "failed", trained=r["status"] == "done")
            prog.running = min(jobs, prog.remaining)
            log(prog.line(note(r)))
    ordered = [results[c.name] for c in cells]
    return SweepResult(out, ordered, loads, time.perf_counter() - t0)


def _dask_cells(todo: Sequence[Cell], out: Path, unions: dict[str, dict[str, tuple[str, str]]],
                scheduler: str | None, scheduler_file: str | None,
                prefixes: Mapping[str, str]) -> Any:
    """Each cell as one Dask task (results as they finish). A cell whose task was lost with the
    cluster comes back as failed with that reason; its claim died with its worker, so the next
    sweep resumes it."""
    import uuid

    from distributed import Client, as_completed

    client = Client(scheduler_file=scheduler_file) if scheduler_file else Client(scheduler)
    run = uuid.uuid4().hex[:8]
    try:
        futures = {client.submit(_worker, c, str(out), unions, None, prefixes[c.name], pure=False,
                                 key=f"avpipe-sweep-{run}-{i}"): c for i, c in enumerate(todo)}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:  # noqa: BLE001 - the cluster's failure, reported per cell
                yield {"name": futures[fut].name, "status": "failed", "seconds": 0.0,
                       "error": f"the Dask task was lost ({type(e).__name__}: {e}); rerun the sweep to resume it"}
    finally:
        client.close()
