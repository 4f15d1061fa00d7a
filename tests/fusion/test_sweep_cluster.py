"""Sweeps that share one --out (processes, machines, array tasks): each cell trains once; shards
cover the grid; the small fixes (paths relative to the sweep file, one-value --set, --split-file
and --num-threads)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fusion.conftest import small_config

ROOT = Path(__file__).resolve().parents[2]


def _spec(corpus, out: Path, seeds=(0, 1, 2, 3), **over):
    from avpipe.fusion.sweep import SweepSpec

    base = small_config(corpus, "concat", out / "unused", **{"epochs": 2, **over}).to_dict()
    for k in ("out", "fusion", "seed"):
        base.pop(k)
    return SweepSpec(base=base, grid={"fusion": ["concat"], "seed": list(seeds)}, out=str(out))


def _sweep(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "avpipe", "sweep", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _statuses(text: str, names: list[str]) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+(done|skipped|elsewhere|failed)\b", line)
        if m and m.group(1) in names:
            out[m.group(1)] = m.group(2)
    return out


def test_two_sweeps_on_one_out_train_each_cell_once(corpus, tmp_path):
    from avpipe.fusion.sweep import expand, is_finished

    out = tmp_path / "sweep"
    spec = _spec(corpus, out)
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"sweep": {"out": str(out)}, "base": spec.base, "grid": spec.grid}))
    cells = expand(spec)
    names = [c.name for c in cells]
    procs = [_sweep("--config", str(cfg)), _sweep("--config", str(cfg))]
    texts = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), texts
    st = [_statuses(t, names) for t in texts]
    for n in names:
        got = sorted(s.get(n, "?") for s in st)
        # trained by exactly one of them; the other found it finished or being trained
        assert got.count("done") == 1 and set(got) <= {"done", "skipped", "elsewhere"}, (n, got, texts)
    assert all(is_finished(out / c.name, c) for c in cells)
    for c in cells:  # one uninterrupted training per cell: one row per epoch, no duplicates
        rows = (out / c.name / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 2, rows


def test_a_held_claim_is_skipped_and_a_dead_claimants_cell_is_claimed_again(corpus, tmp_path):
    from avpipe.fusion.claims import claim
    from avpipe.fusion.sweep import expand, run_cell

    out = tmp_path / "sweep"
    cell = expand(_spec(corpus, out, seeds=(0,), epochs=1))[0]
    held = claim(out / cell.name)
    assert held is not None
    r = run_cell(cell, out, log=lambda m: None)
    assert r["status"] == "elsewhere" and str(os.getpid()) in r["holder"]
    assert not (out / cell.name / "completed.json").exists()
    held.release()
    # a claimant that dies (SIGKILL: no cleanup) leaves its claim file, not its lock
    code = ("import sys, time; from pathlib import Path; from avpipe.fusion.claims import claim; "
            "c = claim(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(out / cell.name)], stdout=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == b"held"
    assert claim(out / cell.name) is None  # held by the live process
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = run_cell(cell, out, log=lambda m: None)
    assert r["status"] == "done" and (out / cell.name / "completed.json").is_file()


def test_shards_cover_the_grid_once_and_bad_shard_is_a_usage_error(corpus, tmp_path):
    from click.testing import CliRunner

    from avpipe.cli import main
    from avpipe.fusion.sweep import SweepError, expand, parse_shard, shard_cells

    cells = expand(_spec(corpus, tmp_path / "s", seeds=tuple(range(7))))
    parts = [shard_cells(cells, (k, 3)) for k in (1, 2, 3)]
    flat = [c.name for p in parts for c in p]
    assert sorted(flat) == sorted(c.name for c in cells) and len(flat) == len(set(flat)) == 7
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(SweepError, match="K/N"):
            parse_shard(bad)
    r = CliRunner().invoke(main, ["sweep", "--labels", str(corpus["labels"]), "--cache", str(corpus["cache"]),
                                  "--fusion", "concat", "--shard", "4/3"])
    assert r.exit_code == 2 and "K/N" in r.output, r.output
    r = CliRunner().invoke(main, ["sweep", "--labels", str(corpus["labels"]), "--fusion", "concat",
                                  "--backend", "dask"])
    assert r.exit_code == 2 and "--scheduler" in r.output, r.output


def test_sweep_file_paths_are_relative_to_the_file_and_one_value_set_is_not_in_names(corpus, tmp_path):
    import shutil

    from click.testing import CliRunner

    from avpipe.cli import main
    from avpipe.fusion.sweep import SweepSpec, expand

    proj = tmp_path / "proj"
    shutil.copytree(corpus["labels"], proj / "data" / "labels")
    (proj / "sweep.toml").write_text('[sweep]\nout = "grid"\n[base]\nlabels = "data/labels"\n'
                                     f'cache = "{corpus["cache"]}"\nepochs = 1\n[grid]\nfusion = ["concat"]\n'
                                     'seed = [0, 1]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = SweepSpec.load(proj / "sweep.toml")
    assert Path(spec.out) == proj / "grid"
    cells = expand(spec)
    assert Path(cells[0].train_config("x").labels) == proj / "data" / "labels"
    # the value as written names the cell: the same folder whatever the current directory
    written = SweepSpec(base=dict(spec.base), grid=dict(spec.grid), out=spec.out)
    assert [c.name for c in expand(written)] == [c.name for c in cells]
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        r = CliRunner().invoke(main, ["sweep", "--config", str(proj / "sweep.toml"), "--dry-run",
                                      "--set", "batch_size=4", "--set", "lr=1e-3,2e-3",
                                      "--num-threads", "1", "--split-file", str(_split(corpus, tmp_path))])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("todo")]
    assert len(lines) == 4 and all(str(proj / "grid") in ln for ln in lines), r.output
    assert not any("bs4" in ln or "num-threads" in ln or "split" in ln for ln in lines), r.output
    assert all(re.search(r"-lr0\.00[12]-", ln) for ln in lines), r.output


def _split(corpus, tmp_path: Path) -> Path:
    f = tmp_path / "split.json"  # the dry run only needs the file to exist
    f.write_text(json.dumps({"train": [], "val": []}))
    return f


def test_sweep_cells_as_dask_tasks_match_a_local_sweep(corpus, tmp_path):
    distributed = pytest.importorskip("distributed")
    from avpipe.fusion.sweep import run_sweep

    local = run_sweep(_spec(corpus, tmp_path / "local", seeds=(0, 1), epochs=1), log=lambda m: None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        res = run_sweep(_spec(corpus, tmp_path / "dask", seeds=(0, 1), epochs=1), log=lambda m: None,
                        backend="dask", scheduler=cluster.scheduler_address)
    assert [r["status"] for r in res.results] == ["done", "done"]
    for a, b in zip(local.results, res.results):
        assert a["name"] == b["name"]
        assert b["best"]["val_ccc_mean"] == pytest.approx(a["best"]["val_ccc_mean"], abs=1e-6)
    assert all((tmp_path / "dask" / r["name"] / "completed.json").is_file() for r in res.results)
