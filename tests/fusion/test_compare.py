"""Run comparison: which config keys make two runs different experiments."""
from __future__ import annotations

from pathlib import Path

import pytest

from avpipe.fusion.compare import RunInfo, config_differences, summarize


def _run(path: str, **config) -> RunInfo:
    base = {"fusion": "jca", "seed": 0, "lr": 1e-3, "cache": "/a/cache", "out": path,
            "resolved_features": {"visual": {"stage": "visual", "fingerprint": "ab" * 32}}}
    return RunInfo(Path(path), {**base, **config}, {}, "finished", 1)


def test_where_a_run_ran_is_no_difference_what_it_read_and_how_it_trained_are():
    same = [_run("r1"), _run("r2", cache="/mnt/other/place/cache", device="cuda:1", num_threads=4)]
    assert config_differences(same)[0] == []  # same features (fingerprints), only paths and devices differ
    diff, values = config_differences([_run("r1"), _run("r2", lr=3e-4, seed=1)])
    assert diff == ["lr", "seed"] and values[1] == {"lr": 3e-4, "seed": 1}
    other = _run("r3", resolved_features={"visual": {"stage": "visual", "fingerprint": "cd" * 32}})
    assert config_differences([_run("r1"), other])[0] == ["fp.visual"]


def _folder(root: Path, name: str, seed: int, score: float, run_id: str | None) -> Path:
    import json

    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"fusion": "jca", "seed": seed, "lr": 1e-3, "out": name}))
    (d / "summary.json").write_text(json.dumps({"best": {"val_ccc_mean": score, "epoch": 3}, "epochs_run": 4}))
    if run_id:
        (d / "run.json").write_text(json.dumps({"run_id": run_id}))
    return d


def test_compare_counts_each_run_once(tmp_path):
    """``compare runs/grid runs/jca`` with runs/jca and runs/grid/jca-s0 both seed 0 reported
    ``seeds 3`` ("0 0 1"): mean and std over a duplicated seed."""
    from click.testing import CliRunner

    from avpipe.cli import main

    _folder(tmp_path / "grid", "jca-s0", 0, 0.40, "a" * 32)
    _folder(tmp_path / "grid", "jca-s1", 1, 0.50, "b" * 32)
    _folder(tmp_path, "jca", 0, 0.60, "c" * 32)  # trained again with the same seed and config
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "grid"), str(tmp_path / "jca"),
                                  "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    import csv

    (row,) = list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))
    assert row["seeds"] == "0 1" and row["n_runs"] == "2"
    assert float(row["mean_mean"]) == pytest.approx(0.45, abs=1e-6)
    assert "same config and seed 0" in r.output and "jca-s0" in r.output


def test_a_copied_run_is_the_same_run(tmp_path):
    import shutil

    from avpipe.fusion.compare import collect_runs, duplicate_notes, summarize

    a = _folder(tmp_path, "jca", 0, 0.6, "c" * 32)
    shutil.copytree(a, tmp_path / "jca2")
    _folder(tmp_path, "old", 1, 0.5, None)
    shutil.copytree(tmp_path / "old", tmp_path / "old_copy")  # runs from before run.json: by content
    rows = summarize(collect_runs([tmp_path]))
    assert len(rows) == 1 and rows[0].seeds == [0, 1]
    notes = duplicate_notes(rows)
    assert len(notes) == 2 and all("(a copy): counted once" in n for n in notes)


def test_two_fingerprints_of_one_stage_are_two_rows_labelled_by_fingerprint():
    """Identity vs expression visual features: same model, same stage name, different entries."""
    a = [_run(f"a{i}", seed=i) for i in range(2)]
    b = [_run(f"b{i}", seed=i, resolved_features={"visual": {"stage": "visual", "fingerprint": "cd" * 32}})
         for i in range(2)]
    rows = summarize(a + b)
    assert [(r.features, len(r.runs)) for r in rows] == [("visual=visual@abababab", 2), ("visual=visual@cdcdcdcd", 2)]
    # one fingerprint per modality across the runs: labels stay plain (a run without that modality
    # does not count as a second fingerprint)
    c = _run("c", fusion="audio", resolved_features={"audio": {"stage": "logmel", "fingerprint": "ef" * 32}})
    assert {r.features for r in summarize(a + [c])} == {"visual=visual", "audio=logmel"}
    # two stages for one modality are told apart by their names already
    d = _run("d", fusion="audio", resolved_features={"audio": {"stage": "egemaps", "fingerprint": "12" * 32}})
    assert {r.features for r in summarize([c, d])} == {"audio=logmel", "audio=egemaps"}
