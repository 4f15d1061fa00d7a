"""Run comparison: which config keys make two runs different experiments."""
from __future__ import annotations

from pathlib import Path

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
