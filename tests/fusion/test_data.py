"""The data path: contiguous bank, windows as gathers, train-only statistics, chunked fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avpipe.fusion.data import ChunkedBanks, InMemoryBanks, TrackRef, compute_stats, load_bank, make_provider
from avpipe.fusion.labels import LabelTrack
from avpipe.fusion.source import FeatureArrays, FeatureSet, MemorySource, StageRef
from avpipe.fusion.windows import batches, make_windows, window_starts


def _source(lengths=(50, 7, 33), dims=(4, 3), seed=0):
    rng = np.random.default_rng(seed)
    arrays, tracks = {}, []
    for i, n in enumerate(lengths):
        key = f"v{i}.mp4"
        for st, d in zip(("visual", "logmel"), dims):
            m = rng.random(n) > 0.2
            arrays[(st, key)] = FeatureArrays(rng.normal(size=(n, d)).astype(np.float32) + 3 * i, m)
        y = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        y[::5] = -5
        tracks.append(TrackRef(f"v{i}", key, LabelTrack(f"v{i}", f"v{i}", y, "train")))
    return MemorySource(arrays), tracks


FPS = {"visual": ("visual", "mem-visual"), "audio": ("logmel", "mem-logmel")}


def test_windows_cover_every_frame():
    v, s, n = window_starts(np.array([50, 7, 33]), 16, 10)
    for vid, L in enumerate((50, 7, 33)):
        covered = np.zeros(L, bool)
        for st, ln in zip(s[v == vid], n[v == vid]):
            covered[st:st + ln] = True
        assert covered.all()
    assert n[v == 1].tolist() == [7]  # short video: one padded window
    assert s[v == 0][-1] == 50 - 16  # last window aligned to the end


def test_gather_equals_direct_slicing():
    src, tracks = _source()
    bank = load_bank(src, FPS, tracks)
    assert bank.n_rows == 90 and bank.x["visual"].shape == (91, 4)  # + zero sentinel row
    stats = compute_stats([bank])
    bank.set_stats(stats)
    w = make_windows(bank.offsets, 16, 10)
    b = bank.gather(w, 16)
    for i in range(len(w)):
        vid, st, ln = int(w.video[i]), int(w.start[i]), int(w.length[i])
        local = st - int(bank.offsets[vid])
        a = src.arrays[("visual", f"v{vid}.mp4")]
        ref = (a.data[local:local + ln] - stats.mean["visual"]) / stats.std["visual"]
        ref[~a.mask[local:local + ln]] = 0
        assert torch.allclose(b.x["visual"][i, :ln], torch.tensor(ref), atol=1e-5)
        assert torch.all(b.x["visual"][i, ln:] == 0) and not b.mask["visual"][i, ln:].any()
        lab = tracks[vid].labels.values[local:local + ln]
        assert b.y_mask[i, :ln].tolist() == (lab[:, 0] != -5).tolist()


def test_stats_use_valid_rows_only():
    src, tracks = _source()
    for t in tracks:
        a = src.arrays[("visual", t.video)]
        a.data[~a.mask] = 1e6  # garbage on invalid rows must not move the statistics
    st = compute_stats([load_bank(src, FPS, tracks)])
    assert np.all(np.abs(st.mean["visual"]) < 100)


def test_stats_and_normalisation_do_not_depend_on_the_row_step():
    """compute_stats / set_stats walk the bank a few rows at a time (so their scratch memory is a
    chunk, not a bank-sized copy): any step, including one that splits tracks and leaves a ragged
    tail, gives the statistics and normalised rows of one whole-bank step; the bank keeps its dtype,
    and the in-place arithmetic never writes through to a float64 bank's rows before they are read."""
    src, tracks = _source(lengths=(50, 7, 33))
    for dtype in ("float64", "float32", "float16"):
        whole, steps = load_bank(src, FPS, tracks, dtype=dtype), load_bank(src, FPS, tracks, dtype=dtype)
        s_whole, s_steps = compute_stats([whole], chunk=1 << 20), compute_stats([steps], chunk=4)
        for m in FPS:
            np.testing.assert_allclose(s_steps.mean[m], s_whole.mean[m], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(s_steps.std[m], s_whole.std[m], rtol=1e-6)
        whole.set_stats(s_whole, chunk=1 << 20)
        steps.set_stats(s_whole, chunk=7)
        for m in FPS:
            assert steps.x[m].dtype == getattr(torch, dtype)
            assert torch.equal(steps.x[m], whole.x[m])
            assert torch.all(steps.x[m][~steps.valid[m]] == 0)  # invalid rows (and the sentinel) zeroed
        a = src.arrays[("visual", "v2.mp4")]
        ref = (a.data - s_whole.mean["visual"]) / s_whole.std["visual"]
        ref[~a.mask] = 0
        np.testing.assert_allclose(steps.x["visual"][steps.track_slice(2)].float().numpy(), ref,
                                   atol=1e-2 if dtype == "float16" else 1e-5, rtol=1e-2 if dtype == "float16" else 0)


def test_chunked_provider_sees_the_same_rows():
    src, tracks = _source(lengths=(40, 30, 20, 10))
    full = make_provider(src, FPS, tracks, device="cpu", budget_bytes=1 << 30)
    assert isinstance(full, InMemoryBanks)
    ch = make_provider(src, FPS, tracks, device="cpu", budget_bytes=45 * 40)
    assert isinstance(ch, ChunkedBanks) and len(ch.track_groups) > 1
    rows = sorted(n for b in ch.groups(3, seed=1) for n in b.names)
    assert rows == sorted(full.bank.names)
    s1, s2 = compute_stats(full.groups(0)), compute_stats(ch.groups(0))
    assert np.allclose(s1.mean["audio"], s2.mean["audio"], atol=1e-5)


def test_batches_deterministic_and_sharded():
    a = [b.tolist() for b in batches(10, 4, seed=3, epoch=2)]
    assert a == [b.tolist() for b in batches(10, 4, seed=3, epoch=2)]
    assert a != [b.tolist() for b in batches(10, 4, seed=3, epoch=1)]
    r0 = torch.cat(list(batches(11, 4, seed=3, epoch=2, rank=0, world=2)))
    r1 = torch.cat(list(batches(11, 4, seed=3, epoch=2, rank=1, world=2)))
    assert len(r0) == len(r1) == 5 and not set(r0.tolist()) & set(r1.tolist())


def test_feature_set_parsing_and_missing_stage():
    fs = FeatureSet.parse("visual=visual, audio=logmel@ab12", ["visual", "audio", "text"])
    assert fs.to_dict() == {"visual": "visual", "audio": "logmel@ab12", "text": "text"}
    src, _ = _source()
    with pytest.raises(LookupError, match="avpipe extract --stages text"):
        src.resolve(StageRef("text"), ["v0.mp4"])


def test_bank_peak_memory_stays_near_the_bank(tmp_path):
    """load_bank reads one video at a time into a bank allocated once: peak traced allocation
    <= 1.3x the bank (holding every video's arrays while filling made it >= 2x)."""
    import tracemalloc

    from avpipe.fusion.source import CacheSource
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

    spec = SyntheticSpec(n_videos=12, min_frames=1500, max_frames=2500, dims={"visual": 96, "audio": 48},
                         dtype="float32", seed=3)
    fps = make_corpus(tmp_path / "cache", tmp_path / "labels", spec)
    source = CacheSource(tmp_path / "cache")
    keys = sorted(k for k, _ in source.videos())
    stage_fps = {m: (st, fp) for m, (st, fp) in ((m, ("visual" if m == "visual" else "logmel", fps[m]))
                                                  for m in ("visual", "audio"))}
    tracks = [TrackRef(k, k, None) for k in keys]
    load_bank(source, stage_fps, tracks[:1])  # warm the index/h5py caches outside the measurement
    tracemalloc.start()
    try:
        bank = load_bank(source, stage_fps, tracks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(t.element_size() * t.numel()
               for t in [*bank.x.values(), *bank.valid.values(), bank.y, bank.y_valid, bank.offsets])
    assert bank.n_rows > 12 * 1400 and size > 8 << 20
    assert peak <= 1.3 * size, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB bank"
    a = source.load("visual", fps["visual"], keys[5])  # and the rows are the entries' rows
    s = bank.track_slice(5)
    np.testing.assert_array_equal(bank.x["visual"][s].numpy(), a.data)


def test_a_labelled_track_with_an_empty_modality_warns(recwarn):
    """A video without audio (100 % masked) or with digital silence (every row the same) trained
    with no word."""
    src, tracks = _source()
    n0, n1 = 50, 7
    src.arrays[("logmel", "v0.mp4")] = FeatureArrays(np.zeros((n0, 3), np.float32), np.zeros(n0, bool))
    src.arrays[("logmel", "v1.mp4")] = FeatureArrays(np.full((n1, 3), -11.5, np.float32), np.ones(n1, bool))
    load_bank(src, FPS, tracks)
    msgs = [str(w.message) for w in recwarn if "learns nothing" in str(w.message)]
    assert len(msgs) == 2, msgs
    assert "'v0'" in msgs[0] and "'audio'" in msgs[0] and "100 % masked" in msgs[0]
    assert "'v1'" in msgs[1] and "constant" in msgs[1]
    recwarn.clear()
    tracks[0].labels.values[:] = -5  # an unlabelled track is not trained on: no warning
    src.arrays[("logmel", "v1.mp4")] = FeatureArrays(np.arange(n1 * 3, dtype=np.float32).reshape(n1, 3),
                                                     np.ones(n1, bool))
    load_bank(src, FPS, tracks)
    assert not [w for w in recwarn if "learns nothing" in str(w.message)]
