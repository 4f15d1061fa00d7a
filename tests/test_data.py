"""The public data API (avpipe.data): exact aligned reads, per-person reads, window datasets that
match the trainer's bank, a multi-worker DataLoader, and a model avpipe does not ship trained on it."""
from __future__ import annotations

import inspect
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import avpipe.data as data_api
from avpipe.data import DataError, FeatureStore, InMemoryWindowDataset, WindowDataset, parse_features

ROOT = Path(__file__).resolve().parents[1]
FEATS = {"visual": "visual", "audio": "logmel"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

    root = tmp_path_factory.mktemp("dataapi")
    spec = SyntheticSpec(n_videos=8, min_frames=70, max_frames=120, dims={"visual": 6, "audio": 4}, seed=3)
    fps = make_corpus(root / "cache", root / "labels", spec)
    return {"cache": root / "cache", "labels": root / "labels", "fps": fps}


@pytest.fixture(scope="module")
def two_person(tmp_path_factory):
    """A cache with one two-person video: a person-aware visual entry (tracks 5 and 8) and audio."""
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.types import StageResult

    root = tmp_path_factory.mktemp("persons") / "cache"
    n, cid, key = 20, "ab" * 20, "two.mp4"
    main = np.zeros((n, 3), np.float32)
    tdata = np.stack([np.full((n, 3), 1.0, np.float32), np.full((n, 3), 2.0, np.float32)])
    tmask = np.ones((2, n), bool)
    tmask[1, :4] = False
    vis = StageResult(main, np.ones(n, bool), attrs={"sides": {"left": 8, "right": 5}, "tracks": [{}, {}]},
                      extras={"track_ids": np.array([5, 8]), "track_data": tdata, "track_mask": tmask})
    aud = StageResult(np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.ones(n, bool))
    quiet_cid = "ef" * 20  # a second video whose audio stream is absent: no rows stored
    quiet_vis = StageResult(main.copy(), np.ones(n, bool), attrs={"sides": {}, "tracks": []},
                            extras={"track_ids": np.zeros(0, int), "track_data": np.zeros((0, n, 3), np.float32),
                                    "track_mask": np.zeros((0, n), bool)})
    quiet_aud = StageResult(np.zeros((0, 2), np.float32), np.zeros(0, bool), attrs={"present": False})
    keys = {cid: key, quiet_cid: "quiet.mp4"}
    write_precomputed(root, "visual", None, {cid: vis, quiet_cid: quiet_vis}, keys, {"t": 1})
    write_precomputed(root, "logmel", None, {cid: aud, quiet_cid: quiet_aud}, keys, {"t": 1})
    return root


def test_read_is_aligned_and_equals_the_cache(corpus):
    from avpipe.pipeline.store import Cache

    with FeatureStore(corpus["cache"]) as s:
        v = s.read("vid0002.mp4", FEATS)
    with Cache(corpus["cache"]) as c:
        e = c.read("visual", "vid0002.mp4", fingerprint=corpus["fps"]["visual"])
        np.testing.assert_array_equal(v.x["visual"], e.data)
        np.testing.assert_array_equal(v.mask["visual"], e.mask)
    assert v.n_frames == len(e.data) and v.x["audio"].shape == (v.n_frames, 4)
    assert v.fingerprints == {"visual": f"visual@{corpus['fps']['visual']}", "audio": f"logmel@{corpus['fps']['audio']}"}
    # pinned by a fingerprint prefix: the same rows
    w = FeatureStore(corpus["cache"]).read("vid0002.mp4", f"visual=visual@{corpus['fps']['visual'][:10]}")
    np.testing.assert_array_equal(w.x["visual"], v.x["visual"])


def test_read_fits_labels_and_refuses_far_lengths(corpus):
    s = FeatureStore(corpus["cache"])
    n = s.read("vid0001.mp4", FEATS).n_frames
    y = np.full((n - 2, 2), 0.5, np.float32)
    v = s.read("vid0001.mp4", FEATS, labels=y)
    assert v.labels.shape == (n, 2) and v.label_mask[:n - 2].all() and not v.label_mask[n - 2:].any()
    with pytest.raises(DataError, match="has 3 frames"):
        s.read("vid0001.mp4", FEATS, labels=np.zeros((3, 2), np.float32))


def test_errors_are_one_line_and_specific(corpus):
    s = FeatureStore(corpus["cache"])
    with pytest.raises(DataError) as e:
        s.read("vid0001.mp4", {"visual": "faces"})
    assert "\n" not in str(e.value) and "faces" in str(e.value)
    with pytest.raises(DataError, match="unknown video"):
        s.read("nope.mp4", FEATS)
    with pytest.raises(DataError, match="no completed entries with fingerprint"):
        s.read("vid0001.mp4", "visual=visual@ffffffffff")
    with pytest.raises(DataError, match="no avpipe cache"):
        FeatureStore(corpus["cache"].parent / "missing")


def test_parse_features_forms():
    assert parse_features("visual,logmel") == {"visual": "visual", "logmel": "logmel"}
    assert parse_features("audio=logmel@ab12,visual=visual") == {"audio": "logmel@ab12", "visual": "visual"}
    assert parse_features(["visual@cd34"]) == {"visual": "visual@cd34"}
    with pytest.raises(DataError):
        parse_features([])


def test_person_reads_bind_the_right_track(two_person):
    s = FeatureStore(two_person)
    left = s.read("two.mp4", FEATS, person="left")
    right = s.read("two.mp4", FEATS, person="right")
    by_id = s.read("two.mp4", FEATS, person=8)
    assert np.all(left.x["visual"] == 2.0) and np.all(right.x["visual"] == 1.0)
    np.testing.assert_array_equal(by_id.x["visual"], left.x["visual"])
    assert not left.mask["visual"][:4].any() and left.mask["visual"][4:].all()
    np.testing.assert_array_equal(left.x["audio"], right.x["audio"])  # audio is shared
    assert np.all(s.read("two.mp4", FEATS).x["visual"] == 0.0)  # None: the main face
    with pytest.raises(DataError, match="no face track 7"):
        s.read("two.mp4", FEATS, person=7)
    with pytest.raises(DataError, match="unknown person 'middle'"):
        s.read("two.mp4", FEATS, person="middle")
    # an absent stream: zeros of the stage's width, all masked (arrays of two videos stack)
    q = s.read("quiet.mp4", FEATS)
    assert q.x["audio"].shape == (20, 2) and not q.mask["audio"].any() and not q.present()["audio"].any()
    with pytest.raises(DataError, match="no left person track"):
        s.read("quiet.mp4", FEATS, person="left")


def test_window_datasets_match_the_trainers_bank(corpus):
    from avpipe.fusion.windows import make_windows

    lazy = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8)
    mem = InMemoryWindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8)
    w = make_windows(mem.bank.offsets, 16, 8, mem.bank.y_valid, require_labels=True)
    assert len(lazy) == len(mem) == len(w) > 0
    starts = (mem.bank.offsets[torch.as_tensor(mem.windows.track)] + torch.as_tensor(mem.windows.start))
    assert torch.equal(starts, w.start)
    for i in (0, len(lazy) // 2, len(lazy) - 1):
        a, b = lazy[i], mem[i]
        for k in FEATS:
            assert torch.equal(a["x"][k], b["x"][k]) and torch.equal(a["mask"][k], b["mask"][k])
        assert torch.equal(a["y"], b["y"]) and torch.equal(a["y_mask"], b["y_mask"])
    # normalised with the split's statistics: the same as the trainer's set_stats
    st = lazy.compute_stats()
    lazy_n = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8, stats=st)
    mem_n = InMemoryWindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8,
                                  stats="self")
    for k in FEATS:
        np.testing.assert_allclose(st[k][0], mem_n.stats[k][0], rtol=1e-5, atol=1e-6)
    for i in range(0, len(lazy_n), 7):
        for k in FEATS:
            torch.testing.assert_close(lazy_n[i]["x"][k], mem_n[i]["x"][k], rtol=1e-4, atol=1e-5)


def test_splits_and_clip_pooling(corpus):
    tr = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=16)
    va = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="val", window=16, hop=16)
    assert {t.split for t in tr.tracks} == {"train"} and {t.split for t in va.tracks} == {"val"}
    assert not {t.video for t in tr.tracks} & {t.video for t in va.tracks}
    pooled = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=16, clip_len=4)
    it, ip = tr[0], pooled[0]
    assert ip["x"]["visual"].shape == (4, 6) and ip["y"].shape == (16, 2)
    m = it["mask"]["visual"][:4]
    if m.any():
        torch.testing.assert_close(ip["x"]["visual"][0], it["x"]["visual"][:4][m].mean(0))
    with pytest.raises(DataError, match="multiple of clip_len"):
        WindowDataset(corpus["cache"], corpus["labels"], FEATS, window=10, clip_len=4)


def test_dataset_opens_the_cache_per_process(corpus):
    ds = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8)
    ds[0]  # the parent opens the index and keeps tracks
    assert ds._pid == os.getpid() and ds._store is not None
    state = pickle.loads(pickle.dumps(ds))  # spawned workers get no open handle
    assert state._store is None and not state._entries
    ds._pid = -1  # as a forked child sees it: the parent's handle is not reused
    old = ds._store
    ds[1]
    assert ds._store is not old and ds._pid == os.getpid()


class TinyGRU(torch.nn.Module):
    """A model avpipe does not ship: concatenated masked features -> GRU -> valence/arousal."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(sum(dims.values()) + len(dims), 16, batch_first=True)
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x, mask):
        z = torch.cat([x[k] for k in sorted(x)] + [mask[k].float().unsqueeze(-1) for k in sorted(mask)], -1)
        return self.head(self.gru(z)[0])


def _loss(model, loader):
    tot, n = 0.0, 0
    with torch.no_grad():
        for b in loader:
            err = (model(b["x"], b["mask"]) - b["y"]).square().sum(-1)
            tot += float(err[b["y_mask"]].sum())
            n += int(b["y_mask"].sum())
    return tot / max(n, 1)


def test_a_gru_written_here_trains_through_a_multiworker_dataloader(corpus):
    torch.manual_seed(0)
    tr = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8)
    st = tr.compute_stats()
    tr = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="train", window=16, hop=8, stats=st)
    va = WindowDataset(corpus["cache"], corpus["labels"], FEATS, split="val", window=16, hop=16, stats=st)
    loader = torch.utils.data.DataLoader(tr, batch_size=8, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    val_loader = torch.utils.data.DataLoader(va, batch_size=16, num_workers=0)
    model = TinyGRU({"visual": 6, "audio": 4})
    before = _loss(model, val_loader)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seen = 0
    for _ in range(6):
        for b in loader:
            err = (model(b["x"], b["mask"]) - b["y"]).square().sum(-1)
            loss = err[b["y_mask"]].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(b["y"])
    assert seen == 6 * len(tr)
    after = _loss(model, val_loader)
    assert after < 0.6 * before, (before, after)


def test_every_public_name_is_documented_and_public():
    doc = (ROOT / "docs" / "data.md").read_text()
    for name in data_api.__all__:
        obj = getattr(data_api, name)
        assert inspect.getdoc(obj), name
        assert getattr(obj, "__module__", "avpipe.data") == "avpipe.data", f"{name} comes from a private module"
        assert re.search(rf"\b{name}\b", doc), f"{name} is not in docs/data.md"


def test_window_datasets_bind_persons_and_read_only_the_window(two_person):
    from avpipe.data import LabelledTrack
    from avpipe.fusion.labels import LabelTrack

    y = np.tile(np.array([[0.1, -0.2]], np.float32), (20, 1))
    tracks = [LabelledTrack(f"two_{p}", "two.mp4", "train", p, LabelTrack(f"two_{p}", "two", y, "train"))
              for p in ("left", "right")]
    lazy = WindowDataset(two_person, tracks, FEATS, window=8, hop=8)
    mem = InMemoryWindowDataset(two_person, tracks, FEATS, window=8, hop=8)
    assert len(lazy) == len(mem) == 6  # 3 windows per person (0, 8, 12: the last aligned to the end)
    for i in range(len(lazy)):
        a, b = lazy[i], mem[i]
        for k in FEATS:
            assert torch.equal(a["x"][k], b["x"][k]) and torch.equal(a["mask"][k], b["mask"][k])
    first_left = lazy[0]
    assert not first_left["mask"]["visual"][:4].any() and first_left["mask"]["visual"][4:].all()
    assert torch.all(first_left["x"]["visual"][4:] == 2.0) and torch.all(lazy[3]["x"]["visual"] == 1.0)
    bad = [LabelledTrack("two_x", "two.mp4", "train", 7, tracks[0].labels)]
    with pytest.raises(DataError, match="label 'two_x'.*no face track 7"):
        WindowDataset(two_person, bad, FEATS, window=8, hop=8)


def test_a_config_file_means_that_configs_fingerprint(tmp_path):
    """Exact reads: a stage name means its default config, a config file another one; with both
    cached, neither read guesses the other."""
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.config import PipelineConfig
    from tests.media import make_clip
    from tests.pipeline import toy_stages as ts

    ts.register()
    try:
        videos = tmp_path / "videos"
        make_clip(videos / "a.mp4", seed=1)
        cache = tmp_path / "cache"
        for cfg in (None, PipelineConfig({"toy_a": {"scale": 2.0}})):
            assert run_extract(cache, videos, cfg, stages=["toy_a"], progress=False).exit_code == 0
        toml = tmp_path / "x2.toml"
        toml.write_text("[stages.toy_a]\nscale = 2.0\n")
        plain = FeatureStore(cache).read("a.mp4", ["toy_a"])
        scaled = FeatureStore(cache, toml).read("a.mp4", ["toy_a"])
        np.testing.assert_allclose(scaled.x["toy_a"][:, 0], 2 * plain.x["toy_a"][:, 0])
        np.testing.assert_allclose(plain.x["toy_a"][:, 0], plain.timestamps, atol=1e-6)  # one time per row
        assert plain.fingerprints["toy_a"] != scaled.fingerprints["toy_a"]
        # only another config cached: the stage name does not fall back to it (the trainer's
        # CacheSource does, for compatibility); one line names it and how to pin it
        only = tmp_path / "only_scaled"
        assert run_extract(only, videos, PipelineConfig({"toy_a": {"scale": 2.0}}), stages=["toy_a"],
                           progress=False).exit_code == 0
        with pytest.raises(DataError) as e:
            FeatureStore(only).read("a.mp4", ["toy_a"])
        fp = scaled.fingerprints["toy_a"].partition("@")[2]
        assert fp[:16] in str(e.value) and "toy_a@FINGERPRINT" in str(e.value) and "\n" not in str(e.value)
        np.testing.assert_array_equal(FeatureStore(only).read("a.mp4", [f"toy_a@{fp[:10]}"]).x["toy_a"],
                                      scaled.x["toy_a"])
    finally:
        ts.unregister()


def test_labelled_tracks_and_the_trainers_loader(corpus):
    from avpipe.data import load_windows
    from avpipe.fusion.data import InMemoryBanks, TrackRef

    store = FeatureStore(corpus["cache"])
    tracks = data_api.labelled_tracks(store, corpus["labels"])
    assert {t.split for t in tracks} == {"train", "val"} and all(t.person is None for t in tracks)
    assert [t.name for t in data_api.labelled_tracks(store, corpus["labels"], split="val")] == \
        [t.name for t in tracks if t.split == "val"]
    fps = store.resolve(FEATS)
    prov = load_windows(store.source, fps, [TrackRef(t.name, t.video, t.labels) for t in tracks[:2]])
    assert isinstance(prov, InMemoryBanks) and prov.bank.names == [t.name for t in tracks[:2]]
    v = store.read(tracks[0].video, {}, resolved=fps)
    np.testing.assert_array_equal(prov.bank.valid["visual"][:v.n_frames].numpy(), v.present()["visual"])


def test_load_windows_old_fps_keyword_warns_and_loads_the_same(corpus):
    """``fps=`` (modality -> (stage, fingerprint), read as frames per second) was renamed
    ``fingerprints=``: code using the old keyword keeps working, warned, with the same result."""
    from avpipe.data import load_windows
    from avpipe.fusion.data import TrackRef

    store = FeatureStore(corpus["cache"])
    tracks = data_api.labelled_tracks(store, corpus["labels"])[:2]
    refs = [TrackRef(t.name, t.video, t.labels) for t in tracks]
    fingerprints = store.resolve(FEATS)
    new = load_windows(store.source, fingerprints=fingerprints, tracks=refs)
    with pytest.warns(DeprecationWarning, match=r"load_windows\(fps=...\) is deprecated; pass fingerprints="):
        old = load_windows(store.source, fps=fingerprints, tracks=refs)
    assert old.bank.names == new.bank.names
    for m in fingerprints:
        np.testing.assert_array_equal(old.bank.x[m].numpy(), new.bank.x[m].numpy())
    with pytest.raises(TypeError, match="both 'fingerprints' and its old name 'fps'"):
        load_windows(store.source, fingerprints, refs, fps=fingerprints)
