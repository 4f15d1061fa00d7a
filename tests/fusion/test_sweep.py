"""Sweeps: one bank load per process, same metrics as runs trained one by one, resume after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fusion.conftest import small_config

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("jca", "audio", "visual")
SEEDS = (0, 1)
TINY = dict(epochs=2, model={"hidden": 16})


def _spec(corpus, out: Path, models=MODELS, seeds=SEEDS, **over):
    from avpipe.fusion.sweep import SweepSpec

    base = small_config(corpus, "jca", out / "unused", **{**TINY, **over}).to_dict()
    for k in ("out", "fusion", "seed"):
        base.pop(k)
    return SweepSpec(base=base, grid={"fusion": list(models), "seed": list(seeds)}, out=str(out))


def test_sweep_loads_bank_once_and_matches_separate_runs(corpus, tmp_path, monkeypatch):
    from avpipe.fusion import data
    from avpipe.fusion.sweep import run_sweep
    from avpipe.fusion.train import train

    loaded: list[tuple[str, ...]] = []
    real = data.load_bank

    def counting(source, fps, tracks, **kw):
        loaded.append(tuple(sorted(fps)))
        return real(source, fps, tracks, **kw)

    monkeypatch.setattr(data, "load_bank", counting)
    res = run_sweep(_spec(corpus, tmp_path / "sweep"), log=lambda m: None)
    assert [r["status"] for r in res.results] == ["done"] * 6
    # one bank (train + val split) for the whole process, holding the union of the features
    assert len(loaded) == 2 and res.bank_loads == 2, loaded
    assert len(set(loaded)) == 1 and len(loaded[0]) == 2

    loaded.clear()
    for r in res.results:
        marker = json.loads((res.out / r["name"] / "completed.json").read_text())
        values = dict(marker["values"])
        alone = train(small_config(corpus, values["fusion"], tmp_path / "alone" / r["name"], seed=values["seed"],
                                   **TINY), log=lambda m: None)
        for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean", "val_ccc_mean_smoothed"):
            assert r["best"][k] == pytest.approx(alone["best"][k], abs=1e-6), (r["name"], k)
        a = (res.out / r["name"] / "metrics.csv").read_text().splitlines()
        b = (tmp_path / "alone" / r["name"] / "metrics.csv").read_text().splitlines()
        cols = a[0].split(",")
        keep = [i for i, c in enumerate(cols) if c in ("epoch", "lr", "train_loss", "val_ccc_mean")]
        assert [[ln.split(",")[i] for i in keep] for ln in a] == [[ln.split(",")[i] for i in keep] for ln in b]
    assert len(loaded) == 12  # six runs alone: train + val bank each


def test_cells_named_deterministically_and_bad_grid_is_a_usage_error(corpus, tmp_path):
    from avpipe.fusion.sweep import SweepError, SweepSpec, expand

    a = [c.name for c in expand(_spec(corpus, tmp_path / "s"))]
    b = [c.name for c in expand(_spec(corpus, tmp_path / "s"))]
    assert a == b and len(set(a)) == 6 and a[0].startswith("jca-s0-")
    assert expand(_spec(corpus, tmp_path / "s", lr=1e-3))[0].name != a[0]  # a base change is a new cell
    with pytest.raises(SweepError, match="unknown option.*'lrr'"):
        expand(SweepSpec(base={}, grid={"lrr": [1]}))
    with pytest.raises(SweepError, match="unknown fusion model 'nope'"):
        expand(SweepSpec(base={}, grid={"fusion": ["nope"]}))


def _cli_sweep(cfg: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "avpipe", "sweep", "--config", str(cfg), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkilled_sweep_reruns_only_unfinished_cells(corpus, tmp_path):
    from avpipe.fusion.sweep import expand

    out = tmp_path / "sweep"
    spec = _spec(corpus, out, models=("concat",), seeds=(0, 1, 2), epochs=6)
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"sweep": {"out": str(out)}, "base": spec.base, "grid": spec.grid}))
    cells = [out / c.name for c in expand(spec)]
    p = _cli_sweep(cfg)
    deadline = time.time() + 120
    # kill once the first cell is finished and the second has written at least one epoch
    while time.time() < deadline and p.poll() is None:
        if (cells[0] / "completed.json").is_file() and (cells[1] / "metrics.csv").is_file():
            break
        time.sleep(0.02)
    assert p.poll() is None, p.communicate()[0].decode()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    finished = [c for c in cells if (c / "completed.json").is_file()]
    assert 1 <= len(finished) < 3
    before = {c: ((c / "completed.json").stat().st_mtime_ns, (c / "checkpoints" / "last.pt").stat().st_mtime_ns)
              for c in finished}
    out2, _ = _cli_sweep(cfg).communicate(timeout=300)
    text = out2.decode()
    assert f"{len(finished)} already finished" in text, text[-2000:]
    assert "resumed from epoch" in text  # the interrupted cell continued from its checkpoint
    assert all((c / "completed.json").is_file() for c in cells)
    for c, mt in before.items():  # finished cells untouched
        assert ((c / "completed.json").stat().st_mtime_ns, (c / "checkpoints" / "last.pt").stat().st_mtime_ns) == mt
    for c in cells:
        if c not in finished and (c / "checkpoints").exists():
            rows = (c / "metrics.csv").read_text().splitlines()
            assert len(rows) == 1 + 6
    assert _cli_sweep(cfg, "--dry-run").communicate(timeout=60)[0].decode().count("finished") == 3
    _check_compare(out, cells)


def _check_compare(out: Path, cells: list[Path]) -> None:
    """``avpipe compare`` on the finished sweep: one row (3 seeds), mean ± sample std of the runs."""
    import csv

    import numpy as np
    from click.testing import CliRunner

    from avpipe.cli import main

    r = CliRunner().invoke(main, ["compare", str(out), "--per-video", "--out", str(out / "cmp")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "cmp" / "compare.csv")))
    assert len(rows) == 1 and rows[0]["model"] == "concat" and rows[0]["n_runs"] == "3"
    means = [json.loads((c / "summary.json").read_text())["best"]["val_ccc_mean"] for c in cells]
    assert float(rows[0]["mean_mean"]) == pytest.approx(np.mean(means), abs=1e-6)
    assert float(rows[0]["mean_std"]) == pytest.approx(np.std(means, ddof=1), abs=1e-6)
    assert "±" in r.output and (out / "cmp" / "compare.png").stat().st_size > 0
    assert (out / "cmp" / "compare.md").read_text().startswith("| model | features | seeds |")
    assert len((out / "cmp" / "per_video.csv").read_text().splitlines()) == 1 + 6  # 6 validation videos
    listing = CliRunner().invoke(main, ["runs", str(out)])
    assert listing.exit_code == 0 and listing.output.count("finished") == 3 and "differing: seed" in listing.output


@pytest.mark.parametrize("args,msg", [
    (["sweep", "--labels", ".", "--set", "lrr=1,2"], "unknown option(s) ['lrr']"),
    (["sweep", "--labels", ".", "--seeds", "a,b"], "--seeds 'a,b'"),
    (["sweep", "--fusion", "jca"], "no labels"),
    (["sweep", "--fusion", "jca", "--labels", "/nonexistent/labels"], "labels '/nonexistent/labels' does not exist"),
    (["compare", "/nonexistent/runs"], "no such run or folder"),
])
def test_usage_errors_exit_2(args, msg):
    from click.testing import CliRunner

    from avpipe.cli import main

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and msg in r.output, r.output


def test_new_commands_have_help_with_examples():
    from click.testing import CliRunner

    from avpipe.cli import main

    for cmd in ("sweep", "runs", "compare", "render"):
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, cmd


def test_jobs_2_spreads_cells_over_processes_with_the_same_metrics(corpus, tmp_path):
    from avpipe.fusion.sweep import run_sweep

    one = run_sweep(_spec(corpus, tmp_path / "one", models=("concat",), seeds=(0, 1), epochs=1), log=lambda m: None)
    two = run_sweep(_spec(corpus, tmp_path / "two", models=("concat",), seeds=(0, 1), epochs=1), jobs=2,
                    log=lambda m: None)
    assert [r["status"] for r in two.results] == ["done", "done"]
    assert [r["name"] for r in one.results] == [r["name"] for r in two.results]
    for a, b in zip(one.results, two.results):
        assert b["best"]["val_ccc_mean"] == pytest.approx(a["best"]["val_ccc_mean"], abs=1e-6)
    assert 2 <= two.bank_loads <= 4  # at most one bank (train + val) per worker process
