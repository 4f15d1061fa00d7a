"""Run comparison: what differs between runs, and the table a paper needs.

A run folder is recognised by its ``config.json``; its numbers come from what the trainer
wrote (``summary.json``: the best epoch's validation CCC, raw and smoothed; ``eval/val_best.json``:
per-video CCC of the best checkpoint; ``metrics.csv`` for runs still training). Nothing is
recomputed, so comparing hundreds of runs is instant and needs no cache.

Grouping: runs whose configs are equal except for the seed (and where/how they ran: out,
cache path, device, threads) form one row; the row reports mean ± sample standard deviation over its seeds.

Each run counts once. A run is identified by the ``run_id`` of its ``run.json`` (a copied or
moved folder keeps it), or — for runs older than ``run.json`` — by its config and metrics. Two
different runs with the same seed and config in one row are not two samples of the seed
distribution either: only the first (by path) counts, and :func:`duplicate_notes` says so.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avpipe.pipeline.atomic import atomic_path, atomic_write_text

#: Config keys that never make two runs different experiments. ``cache`` is only where the
#: features were read: what was read is ``resolved_features`` (exact fingerprints), which counts.
IGNORED = ("out", "cache", "device", "num_threads", "plot_videos", "feature_configs",  # configs: fp.* says it
           "distributed")  # distributed: the launch, not the experiment
METRICS = (("valence", "val_ccc_valence"), ("arousal", "val_ccc_arousal"), ("mean", "val_ccc_mean"),
           ("smoothed", "val_ccc_mean_smoothed"))


class CompareError(ValueError):
    """Nothing to compare (no run folder under the paths given)."""


@dataclass
class RunInfo:
    path: Path
    config: dict[str, Any]
    best: dict[str, float]
    status: str  # finished | training
    epochs: int
    per_video: dict[str, dict[str, float]] = field(default_factory=dict)
    run_id: str = ""

    @property
    def identity(self) -> str:
        """``run.json``'s run id, else a digest of what the run is (config without where it ran, metrics)."""
        if self.run_id:
            return self.run_id
        import hashlib

        cfg = {k: v for k, v in self.config.items() if k not in IGNORED}
        blob = json.dumps([cfg, self.best, self.epochs], sort_keys=True, default=str)
        return "cfg:" + hashlib.sha256(blob.encode()).hexdigest()[:32]

    @property
    def fusion(self) -> str:
        return str(self.config.get("fusion", "?"))

    @property
    def features(self) -> str:
        rf = self.config.get("resolved_features") or {}
        if rf:
            return ",".join(f"{m}={d['stage']}" for m, d in sorted(rf.items()))
        return ",".join(f"{m}={s}" for m, s in sorted((self.config.get("features") or {}).items()))


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k != "resolved_features":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    return out


def _read_run(path: Path) -> RunInfo | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    best: dict[str, float] = {}
    status, epochs = "training", 0
    s = path / "summary.json"
    if s.is_file():
        try:
            summary = json.loads(s.read_text())
            best = {k: float(v) for k, v in summary.get("best", {}).items() if isinstance(v, (int, float))}
            status, epochs = "finished", int(summary.get("epochs_run", 0))
        except (OSError, ValueError):
            pass
    if not best and (path / "metrics.csv").is_file():  # still training: best so far
        with open(path / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        epochs = len(rows)
        if rows:
            top = max(rows, key=lambda r: float(r.get("val_ccc_mean") or "nan")
                      if math.isfinite(float(r.get("val_ccc_mean") or "nan")) else -math.inf)
            best = {k: float(v) for k, v in top.items() if k.startswith("val_") and v not in ("", None)}
            best["epoch"] = float(top.get("epoch", 0))
    per_video: dict[str, dict[str, float]] = {}
    ev = path / "eval" / "val_best.json"
    if ev.is_file():
        try:
            per_video = {k: {m: float(x) for m, x in v.items() if isinstance(x, (int, float))}
                         for k, v in json.loads(ev.read_text()).get("per_video", {}).items()}
        except (OSError, ValueError, AttributeError):
            per_video = {}
    run_id = ""
    try:
        run_id = str(json.loads((path / "run.json").read_text()).get("run_id") or "")
    except (OSError, ValueError, AttributeError):
        pass
    return RunInfo(path, cfg, best, status, epochs, per_video, run_id)


def collect_runs(paths: Iterable[str | Path]) -> list[RunInfo]:
    """Every run folder at or under ``paths`` (sorted by path; unreadable configs skipped)."""
    found: dict[Path, RunInfo] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise CompareError(f"no such run or folder: {p}")
        cands = [p] if (p / "config.json").is_file() else sorted(c.parent for c in p.rglob("config.json"))
        for c in cands:
            if c.resolve() not in found:
                r = _read_run(c)
                if r is not None:
                    found[c.resolve()] = r
    return sorted(found.values(), key=lambda r: str(r.path))


def config_differences(runs: Sequence[RunInfo]) -> tuple[list[str], list[dict[str, Any]]]:
    """Config keys whose values differ among ``runs`` (fingerprints shortened) and each run's values."""
    flats = []
    for r in runs:
        f = {k: v for k, v in _flat(r.config).items() if k.split(".")[0] not in IGNORED}
        rf = r.config.get("resolved_features") or {}
        f.pop("resolved_features", None)
        for m, d in rf.items():
            f[f"fp.{m}"] = f"{d['stage']}@{str(d['fingerprint'])[:8]}"
        flats.append(f)
    keys = sorted({k for f in flats for k in f})
    diff = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    return diff, [{k: f.get(k) for k in diff} for f in flats]


# ----------------------------------------------------------------------------- the paper table
@dataclass
class Row:
    model: str
    features: str
    runs: list[RunInfo]
    extra: str = ""  # config differences other than model/features/seed, if any
    dropped: list[tuple[RunInfo, RunInfo]] = field(default_factory=list)  # (not counted, the run counted)

    def stat(self, key: str) -> tuple[float, float, int]:
        """(mean, sample std or nan, n) of a best-epoch metric over this row's runs."""
        xs = [r.best[key] for r in self.runs if key in r.best and math.isfinite(r.best[key])]
        if not xs:
            return math.nan, math.nan, 0
        mu = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return mu, sd, len(xs)

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r.config.get("seed", 0)) for r in self.runs)


def summarize(runs: Sequence[RunInfo]) -> list[Row]:
    """Group runs that differ only by seed into rows (order of first appearance)."""
    diff, vals = config_differences(runs)
    cand = [k for k in diff if k not in ("fusion", "seed") and not k.startswith(("features", "fp."))]
    # an option counts only if it varies *within* one model and feature set: values that follow
    # from the model (its default batch size, lr, schedule) are not experiment options
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r, v in zip(runs, vals):
        by_model.setdefault(json.dumps([r.fusion, r.features]), []).append(v)
    other = [k for k in cand
             if any(len({json.dumps(v.get(k), sort_keys=True, default=str) for v in vs}) > 1 for vs in by_model.values())]
    # two fingerprints of one stage (e.g. visual on identity vs expression backbones) are two
    # feature sets: never one row; their labels then carry the fingerprint
    seen: dict[tuple[str, str], set[str]] = {}
    for v in vals:
        for k, fp in v.items():
            if k.startswith("fp.") and fp is not None:
                seen.setdefault((k[3:], str(fp).partition("@")[0]), set()).add(str(fp))
    split = {m for m, fingerprints in seen.items() if len(fingerprints) > 1}
    groups: dict[str, Row] = {}
    for r, v in zip(runs, vals):
        extra = ", ".join(f"{k}={v[k]}" for k in other)
        feats = _features_label(r, split)
        key = json.dumps([r.fusion, feats, extra])
        if key not in groups:
            groups[key] = Row(r.fusion, feats, [], extra)
        row = groups[key]
        kept = next((k for k in row.runs if k.identity == r.identity
                     or int(k.config.get("seed", 0)) == int(r.config.get("seed", 0))), None)
        if kept is None:
            row.runs.append(r)
        else:
            row.dropped.append((r, kept))
    return list(groups.values())


def duplicate_notes(rows: Sequence[Row]) -> list[str]:
    """One line per run that was not counted: the same run in two folders, or a second run
    with the same seed and config (mean and std over a repeated seed would be wrong)."""
    out = []
    for row in rows:
        for r, kept in row.dropped:
            if r.identity == kept.identity:
                out.append(f"{r.path} is the same run as {kept.path} (a copy): counted once")
            else:
                out.append(f"{r.path} and {kept.path} are two runs with the same config and seed "
                           f"{r.config.get('seed', 0)}: only {kept.path} is counted; give one another --seed "
                           f"or leave it out")
    return out


def _features_label(r: RunInfo, with_fp: set[tuple[str, str]]) -> str:
    """``visual=visual,audio=logmel``; ``visual=visual@3fa2c1d0`` for (modality, stage) pairs in
    ``with_fp`` (a stage read under more than one fingerprint among the runs)."""
    rf = r.config.get("resolved_features") or {}
    if not rf or not with_fp:
        return r.features
    return ",".join(f"{m}={d['stage']}" + (f"@{str(d['fingerprint'])[:8]}" if (m, d["stage"]) in with_fp else "")
                    for m, d in sorted(rf.items()))


def _cell(mu: float, sd: float, n: int, digits: int = 3) -> str:
    if n == 0 or not math.isfinite(mu):
        return "-"
    return f"{mu:.{digits}f}" if n == 1 or not math.isfinite(sd) else f"{mu:.{digits}f} ± {sd:.{digits}f}"


def table_rows(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "features"] + (["options"] if any(r.extra for r in rows) else []) + \
        ["seeds"] + [name for name, _ in METRICS]
    body = []
    for r in rows:
        line = [r.model, r.features] + ([r.extra] if "options" in header else []) + [str(len(r.runs))]
        line += [_cell(*r.stat(k)) for _, k in METRICS]
        body.append(line)
    return header, body


def render_table(rows: Sequence[Row]) -> str:
    """Plain-text table (what ``avpipe compare`` prints)."""
    header, body = table_rows(rows)
    w = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    nt = header.index("seeds")  # text columns left-aligned, numbers right-aligned
    fmt = lambda cells: "  ".join(c.ljust(w[i]) if i < nt else c.rjust(w[i]) for i, c in enumerate(cells))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * x for x in w)] + [fmt(b) for b in body]
                     + ["validation CCC at each run's best epoch; mean ± sample std over seeds"])


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(map(esc, b)) + " |" for b in body]
    return "\n".join(out) + "\n"


def _csv_text(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    s = io.StringIO()
    w = csv.writer(s, lineterminator="\n")
    w.writerow(header)
    w.writerows(body)
    return s.getvalue()


def per_video_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Video × row: per-video CCC (mean of valence and arousal), averaged over the row's seeds."""
    videos = sorted({v for r in rows for run in r.runs for v in run.per_video})
    header = ["video"] + [f"{r.model} [{r.features}]" + (f" {r.extra}" if r.extra else "") for r in rows]
    body = []
    for v in videos:
        line = [v]
        for r in rows:
            xs = []
            for run in r.runs:
                d = run.per_video.get(v)
                if d and "valence" in d and "arousal" in d:
                    xs.append(d.get("mean", (d["valence"] + d["arousal"]) / 2))
            xs = [x for x in xs if math.isfinite(x)]
            line.append(f"{sum(xs) / len(xs):.3f}" if xs else "-")
        body.append(line)
    return header, body


def write_outputs(rows: Sequence[Row], out: str | Path, per_video: bool = False) -> list[Path]:
    """``compare.csv`` (numbers, machine-readable), ``compare.md``, ``compare.png`` and, with
    ``per_video``, ``per_video.csv``/``per_video.md`` under ``out`` (atomic writes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, body = table_rows(rows)
    num_header = ["model", "features", "options", "seeds", "n_runs"] + \
        [f"{n}_{s}" for n, _ in METRICS for s in ("mean", "std")] + ["runs"]
    num = []
    for r in rows:
        line: list[Any] = [r.model, r.features, r.extra, " ".join(map(str, r.seeds)), len(r.runs)]
        for _, k in METRICS:
            mu, sd, _ = r.stat(k)
            line += [f"{mu:.6f}" if math.isfinite(mu) else "", f"{sd:.6f}" if math.isfinite(sd) else ""]
        num.append(line + [" ".join(str(run.path) for run in r.runs)])
    written = [out / "compare.csv", out / "compare.md"]
    atomic_write_text(written[0], _csv_text(num_header, num))
    atomic_write_text(written[1], markdown_table(header, body))
    if per_video:
        ph, pb = per_video_table(rows)
        atomic_write_text(out / "per_video.csv", _csv_text(ph, pb))
        atomic_write_text(out / "per_video.md", markdown_table(ph, pb))
        written += [out / "per_video.csv", out / "per_video.md"]
    written.append(plot_comparison(rows, out / "compare.png"))
    return written


def plot_comparison(rows: Sequence[Row], path: str | Path) -> Path:
    """Grouped bars (valence, arousal, mean, smoothed) per row with ± std whiskers over seeds."""
    from avpipe.fusion.plots import pyplot

    plt = pyplot()
    path = Path(path)
    n = max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * n + 2), 4))
    width = 0.8 / len(METRICS)
    for j, (name, key) in enumerate(METRICS):
        mus, sds = zip(*[(r.stat(key)[0], r.stat(key)[1]) for r in rows]) if rows else ((), ())
        xs = [i + (j - (len(METRICS) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [m if math.isfinite(m) else 0 for m in mus], width,
               yerr=[s if math.isfinite(s) else 0 for s in sds], capsize=2, label=name)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r.model}\n{r.features}" + (f"\n{r.extra}" if r.extra else "") + f"\n(n={len(r.runs)})"
                        for r in rows], fontsize=7)
    ax.set_ylabel("validation CCC (best epoch)")
    ax.axhline(0, color="k", lw=.5)
    ax.legend(fontsize=8, ncol=len(METRICS), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)  # above the axes: never over a bar
    ax.grid(axis="y", alpha=.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix[1:] or "png")  # the temp name ends in .tmp
    plt.close(fig)
    return path


def render_runs(runs: Sequence[RunInfo], root: Path | None = None) -> str:
    """``avpipe runs``: one line per run with its status, best validation CCC and the config
    values that differ from the other runs listed."""
    diff, vals = config_differences(runs)
    lines = []
    names = [str(r.path.relative_to(root)) if root and r.path.is_relative_to(root) else str(r.path) for r in runs]
    w = max(len(n) for n in names) if names else 0
    for name, r, v in zip(names, runs, vals):
        name = name.ljust(w)
        b = r.best
        score = (f"best {b['val_ccc_mean']:.4f} @ep{int(b.get('epoch', -1))}" if "val_ccc_mean" in b
                 else "no epoch yet")
        d = " ".join(f"{k}={v[k]}" for k in diff if k != "fusion")
        lines.append(f"{name}  {r.fusion}  {r.status} ({r.epochs} ep)  {score}  {d}".rstrip())
    lines.append(f"{len(runs)} run(s)" + (f"; differing: {', '.join(diff)}" if diff else ""))
    return "\n".join(lines)
