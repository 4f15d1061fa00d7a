"""Provenance that makes drift visible: every entry records the numerics package versions it was
computed with, ``inspect`` shows them, and ``cache verify --recompute N`` recomputes a sample and
names the packages that changed when an entry's content differs."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.store import Cache
from avpipe.provenance import numerics_versions
from tests.readonly import snapshot


@pytest.fixture()
def cache(tmp_path, videos):
    c = tmp_path / "cache"
    assert run_extract(c, videos, stages=["toy_b"], progress=False).exit_code == 0
    return c


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_entry_records_the_numerics_packages(cache):
    with Cache(cache) as c:
        rows = c.index.entries()
        fps = {r["fingerprint"] for r in rows}
    assert {r["stage"] for r in rows} == {"probe", "toy_a", "toy_b"}
    for r in rows:
        with h5py.File(cache / r["shard"], "r") as h5:
            got = json.loads(h5[r["content_id"]].attrs["packages_json"])
        assert got == numerics_versions() and got["numpy"] == np.__version__
    r = _cli("inspect", "a.mp4", "--cache", cache)
    assert r.exit_code == 0, r.output
    assert "computed with: " in r.output and f"numpy {np.__version__}" in r.output
    assert "DIFFERS NOW" not in r.output
    assert len(fps) == 3  # provenance lives in attrs only: one fingerprint per stage, as before


def test_inspect_names_packages_that_changed_since(cache, monkeypatch):
    now = {**numerics_versions(), "numpy": "0.0.1"}
    monkeypatch.setattr("avpipe.provenance.numerics_versions", lambda: now)
    r = _cli("inspect", "a.mp4", "--cache", cache)
    assert r.exit_code == 0 and f"DIFFERS NOW: numpy {np.__version__} -> 0.0.1" in r.output, r.output


def test_recompute_reports_same_content_and_changes_nothing(cache):
    before = snapshot(cache)
    r = _cli("cache", "verify", "--recompute", "50", "--cache", cache)
    assert r.exit_code == 0, r.output
    assert "recomputed 12 entries: 12 same" in r.output  # 4 videos x probe, toy_a, toy_b
    assert {k: v for k, v in snapshot(cache).items() if not k.startswith(("index.sqlite", "."))} == \
        {k: v for k, v in before.items() if not k.startswith(("index.sqlite", "."))}


def test_recompute_finds_drift_and_names_the_changed_package(cache, monkeypatch, toy_stages):
    orig = toy_stages.ToyA.compute

    def drifted(self, video, inputs):  # what a new resize or reduction does: last bits move
        res = orig(self, video, inputs)
        res.data = res.data + np.float32(1e-3)
        return res

    monkeypatch.setattr(toy_stages.ToyA, "compute", drifted)
    now = {**numerics_versions(), "numpy": "9.9.9"}
    monkeypatch.setattr("avpipe.provenance.numerics_versions", lambda: now)
    r = _cli("cache", "verify", "--recompute", "3", "--stage", "toy_a", "--seed", "0", "--cache", cache)
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("DIFFERS")]
    assert len(lines) == 3, r.output
    assert "rows differ, max |diff| 0.001" in lines[0]
    assert f"packages changed since it was computed: numpy {np.__version__} -> 9.9.9" in lines[0]
    assert "recomputed 3 entries: 3 differs" in r.output


def test_recompute_skips_an_entry_whose_video_is_gone(cache, videos):
    (videos / "a.mp4").unlink()
    for p in (videos / "sub dir").iterdir():
        p.unlink()
    (videos / "b.mp4").unlink()
    r = _cli("cache", "verify", "--recompute", "2", "--stage", "toy_b", "--cache", cache)
    assert r.exit_code == 0, r.output
    assert r.output.count("SKIPPED") == 2 and "video file is not where it was found" in r.output
    r = _cli("cache", "verify", "--recompute", "2", "--stage", "nosuch", "--cache", cache)
    assert r.exit_code == 2 and "no entries of stage 'nosuch'" in r.output
