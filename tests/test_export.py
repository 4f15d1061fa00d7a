"""avpipe export: every format round-trips the cache's values, records its fingerprints, keeps
train's selection, and fails clearly (missing optional package, bad track, existing folder)."""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.data import FeatureStore, labelled_tracks

FEATS = "visual=visual,audio=logmel"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

    root = tmp_path_factory.mktemp("export")
    spec = SyntheticSpec(n_videos=5, min_frames=40, max_frames=70, dims={"visual": 5, "audio": 3}, seed=1)
    fps = make_corpus(root / "cache", root / "labels", spec)
    return {"cache": root / "cache", "labels": root / "labels", "fps": fps, "root": root}


def _run(*args, ok=(0,)):
    r = CliRunner().invoke(main, ["export", *map(str, args)], catch_exceptions=False)
    assert r.exit_code in ok, r.output
    return r


def _expected(corpus, split=None):
    store = FeatureStore(corpus["cache"])
    tracks = labelled_tracks(store, corpus["labels"], split=split)
    return {t.name: store.read(t.video, {"visual": "visual", "audio": "logmel"}, labels=t.labels) for t in tracks}


def _manifest_ok(out, corpus, n):
    man = json.loads((out / "avpipe_export.json").read_text())
    assert {m: d["fingerprint"] for m, d in man["features"].items()} == corpus["fps"]
    assert man["features"]["audio"]["stage"] == "logmel" and man["features"]["visual"]["config"] is not None
    assert len(man["tracks"]) == n and all(len(t["content_id"]) == 40 for t in man["tracks"])
    return man


def test_npz_per_track_round_trip(corpus, tmp_path):
    out = tmp_path / "npz"
    r = _run("--cache", corpus["cache"], "--features", FEATS, "--labels", corpus["labels"], "--format", "npz",
             "--out", out)
    exp = _expected(corpus)
    assert f"exported {len(exp)} track(s)" in r.output
    man = _manifest_ok(out, corpus, len(exp))
    for t in man["tracks"]:
        z = np.load(out / t["file"])
        v = exp[t["name"]]
        for m in ("visual", "audio"):
            np.testing.assert_array_equal(z[f"x_{m}"], v.x[m])
            np.testing.assert_array_equal(z[f"mask_{m}"], v.mask[m])
        np.testing.assert_array_equal(z["labels"], v.labels)
        assert t["split"] in ("train", "val")
    from avpipe.pipeline.store import Cache

    with Cache(corpus["cache"]) as c:  # and straight from the shard, by the recorded content id
        t = man["tracks"][0]
        e = c.read("logmel", t["content_id"], fingerprint=man["features"]["audio"]["fingerprint"])
        np.testing.assert_array_equal(np.load(out / t["file"])["x_audio"], e.data)


def test_memmap_with_index_round_trip_and_split(corpus, tmp_path):
    out = tmp_path / "mm"
    _run("--cache", corpus["cache"], "--features", FEATS, "--labels", corpus["labels"], "--split", "train",
         "--format", "memmap", "--out", out)
    exp = _expected(corpus, split="train")
    _manifest_ok(out, corpus, len(exp))
    x = np.load(out / "x_visual.npy", mmap_mode="r")
    y = np.load(out / "labels.npy", mmap_mode="r")
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert {r["name"] for r in rows} == set(exp) and {r["split"] for r in rows} == {"train"}
    for r in rows:
        s, e = int(r["start"]), int(r["stop"])
        np.testing.assert_array_equal(x[s:e], exp[r["name"]].x["visual"].astype(np.float32))
        np.testing.assert_array_equal(y[s:e], exp[r["name"]].labels)
    assert x.shape[0] == sum(v.n_frames for v in exp.values())


def test_parquet_round_trip(corpus, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "pq"
    _run("--cache", corpus["cache"], "--features", FEATS, "--labels", corpus["labels"], "--format", "parquet",
         "--out", out)
    exp = _expected(corpus)
    _manifest_ok(out, corpus, len(exp))
    t = pq.read_table(out / "features.parquet")
    assert json.loads(t.schema.metadata[b"avpipe"])["visual"] == f"visual@{corpus['fps']['visual']}"
    d = t.to_pydict()
    for name, v in exp.items():
        idx = [i for i, n in enumerate(d["name"]) if n == name]
        assert [d["frame"][i] for i in idx] == list(range(v.n_frames))
        np.testing.assert_array_equal(np.array([d["visual"][i] for i in idx], np.float32), v.x["visual"])
        np.testing.assert_array_equal(np.array([d["audio_mask"][i] for i in idx]), v.mask["audio"])
        np.testing.assert_array_equal(np.array([d["valence"][i] for i in idx], np.float32), v.labels[:, 0])


def test_hf_dataset_round_trip(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    _run("--cache", corpus["cache"], "--features", FEATS, "--labels", corpus["labels"], "--split", "val",
         "--format", "hf", "--out", out)
    exp = _expected(corpus, split="val")
    _manifest_ok(out, corpus, len(exp))
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == sum(v.n_frames for v in exp.values())
    name = next(iter(exp))
    sub = ds.filter(lambda r: r["name"] == name)
    np.testing.assert_array_equal(np.asarray(sub["visual"], np.float32), exp[name].x["visual"])
    assert set(ds["split"]) == {"val"}


def test_unlabelled_videos_and_person(corpus, tmp_path):
    out = tmp_path / "vids"
    _run("--cache", corpus["cache"], "--features", "visual,logmel", "--videos", "vid0001.mp4,vid0003.mp4",
         "--format", "npz", "--out", out)
    man = json.loads((out / "avpipe_export.json").read_text())
    assert [t["video"] for t in man["tracks"]] == ["vid0001.mp4", "vid0003.mp4"]
    z = np.load(out / man["tracks"][0]["file"])
    assert "labels" not in z and "x_logmel" in z


def test_failures_are_clear_and_the_rest_is_exported(corpus, tmp_path, monkeypatch):
    out = tmp_path / "part"
    r = _run("--cache", corpus["cache"], "--features", "visual", "--videos", "vid0001.mp4,nope.mp4",
             "--format", "npz", "--out", out, ok=(1,))
    assert "nope.mp4" in r.output and "Traceback" not in r.output
    man = json.loads((out / "avpipe_export.json").read_text())
    assert [t["video"] for t in man["tracks"]] == ["vid0001.mp4"] and man["failed"] == ["nope.mp4"]
    r = _run("--cache", corpus["cache"], "--features", "visual", "--format", "npz", "--out", out, ok=(1,))
    assert "exists" in r.output and "--overwrite" in r.output
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if the optional package were not installed
    r = _run("--cache", corpus["cache"], "--features", "visual", "--format", "parquet", "--out", tmp_path / "x",
             ok=(1,))
    assert "pip install 'avpipe[export]'" in r.output and not (tmp_path / "x").exists()
    r = _run("--cache", corpus["cache"], "--features", "visual=", "--format", "npz", "--out", tmp_path / "y", ok=(2,))
    assert "--features" in r.output
    assert not list(tmp_path.glob(".*tmp-*"))  # nothing half-written left behind


def test_export_reads_the_person_asked_for(tmp_path):
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.types import StageResult

    cache, n, cid = tmp_path / "cache", 12, "ef" * 20
    tdata = np.stack([np.full((n, 2), 1.0, np.float32), np.full((n, 2), 2.0, np.float32)])
    vis = StageResult(np.zeros((n, 2), np.float32), np.ones(n, bool), attrs={"sides": {"left": 8, "right": 5},
                                                                             "tracks": [{}, {}]},
                      extras={"track_ids": np.array([5, 8]), "track_data": tdata, "track_mask": np.ones((2, n), bool)})
    write_precomputed(cache, "visual", None, {cid: vis}, {cid: "g/two.mp4"}, {"t": 1})
    for person, value in (("left", 2.0), ("5", 1.0)):
        out = tmp_path / f"o{person}"
        _run("--cache", cache, "--features", "visual", "--person", person, "--format", "npz", "--out", out)
        man = json.loads((out / "avpipe_export.json").read_text())
        assert man["tracks"][0]["person"] == person and man["tracks"][0]["file"] == f"g/two_{person}.npz"
        assert np.all(np.load(out / man["tracks"][0]["file"])["x_visual"] == value)
    r = _run("--cache", cache, "--features", "visual", "--person", "middle", "--format", "npz",
             "--out", tmp_path / "bad", ok=(1,))
    assert "unknown person 'middle'" in r.output and not (tmp_path / "bad").exists()
