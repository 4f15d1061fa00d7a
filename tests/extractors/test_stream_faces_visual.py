"""Streaming ``faces`` and ``visual``: the stored entries equal the whole-array code's, whatever
the chunk sizes, and a worker killed mid-write of a chunked faces result indexes nothing."""
from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.stage import Runtime
from avpipe.pipeline.store import Cache
from tests.extractors.stream_digest import cache_digests
from tests.locked import require_locked

MEDIA = Path(__file__).resolve().parents[1] / "fixtures" / "media"
REPO = Path(__file__).resolve().parents[2]
CLIPS = ("talking_head.mp4", "two_faces_tone.mp4", "no_face_no_audio.mp4")

# Digests of the entries stored by the whole-array faces/visual (main before streaming, commit
# 48ac8cc), `faces` defaults of that time (the window cascade: `track_onet_inputs = 0` since #24)
# and `visual` backbone "hog", computed with
# `python -m tests.extractors.stream_digest CACHE faces,visual`. Decoding, resizing and MTCNN's
# float arithmetic depend on the numerics packages, so the digests hold for requirements.lock's
# versions: another environment fails with the drifted packages named (tests/locked.py).
RECORDED_ARCH = "x86_64"
MAIN_DIGESTS = {
    "faces/aa11e1cf789e/1524d32a89b7c8ceef621520375deff225acbc6f":
        "eafb2e038ce1d1b715731ceeb0136c3a29c7255079076386bd50bde31eb50815",
    "faces/aa11e1cf789e/2c261bde2c0790c7400d7bb0ded3dd004486e529":
        "9b7d0f02bd3a886c5d44dfaf8139f0f6c8b41a362b3e7cbf7ce10e059137a60e",
    "faces/aa11e1cf789e/dac7be1675643d4d47f4e082a572cc3df3b41a47":
        "695dc4b8954e492921f7d1fea49d1c1b638777d2111ce786ea20f57185eee342",
    "visual/ce9de7a30a8c/1524d32a89b7c8ceef621520375deff225acbc6f":
        "4805b041d98cc95423b95dd67651474655bd46a6cba7cf2d5607a2bc40891b03",
    "visual/ce9de7a30a8c/2c261bde2c0790c7400d7bb0ded3dd004486e529":
        "6c344ec69480ef357992826bfacc6b2c1fb30afaf7024008b62ef5196d503445",
    "visual/ce9de7a30a8c/dac7be1675643d4d47f4e082a572cc3df3b41a47":
        "df4c261cd865b6fb57dd3597c6aaa8f9a9da9139afbf76bee2fe65b89bf7c798",
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    for c in CLIPS:
        shutil.copy(MEDIA / c, d / c)
    return d


def _extract(cache: Path, videos: Path, faces: dict | None = None) -> dict[str, str]:
    cfg = PipelineConfig.from_dict({"stages": {"visual": {"backbone": "hog"}, "faces": faces or {}}})
    s = run_extract(cache, videos, cfg, stages=["visual"], runtime=Runtime(device="cpu", num_threads=1),
                    progress=False)
    assert s.exit_code == 0
    return cache_digests(cache, ("faces", "visual"))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, videos) -> tuple[Path, dict[str, str]]:
    cache = tmp_path_factory.mktemp("default")
    return cache, _extract(cache, videos)


@pytest.fixture(scope="module")
def default_chunks(default_run) -> dict[str, str]:
    return default_run[1]


@pytest.fixture(scope="module")
def window_chunks(tmp_path_factory, videos) -> dict[str, str]:
    """The window-cascade tracker's entries (what the whole-array code stored)."""
    return _extract(tmp_path_factory.mktemp("window"), videos, {"track_onet_inputs": 0})


def test_tiny_chunks_store_what_whole_videos_store(tmp_path, videos, default_chunks, monkeypatch):
    """Chunks of 7 frames (every fixture is cut, two_faces_tone's tracks too) and visual batches
    of 3 give the same stored entries as one chunk per video."""
    import avpipe.extractors.faces as faces
    import avpipe.pipeline.chunks as chunks

    monkeypatch.setattr(chunks, "CHUNK_FRAMES", 7)
    monkeypatch.setattr(faces, "TRACK_CROP_BLOCK", 5)
    got = _extract(tmp_path / "tiny", videos)
    assert got == default_chunks
    assert len(got) == 6


def test_stored_entries_equal_the_whole_array_code(window_chunks):
    require_locked()
    if platform.machine() != RECORDED_ARCH:
        pytest.skip(f"digests recorded on {RECORDED_ARCH} (float rounding differs), this is {platform.machine()}")
    assert window_chunks == MAIN_DIGESTS


def test_track_crops_are_chunked_along_frames(default_run):
    """A frame range of one track's crops reads a few chunks, not the whole track (before: one
    chunk per track, 3.4 GB for an hour, over HDF5's 4 GB chunk limit at 70 minutes)."""
    cache = default_run[0]
    with Cache(cache) as c:
        e = next(x for x in c.list() if x.stage == "faces"
                 and c.read("faces", x.content_id, fingerprint=x.fingerprint).attrs["sides"])
        entry = c.read("faces", e.content_id, fingerprint=e.fingerprint)
        shape = entry.extra_shape("track_crops")
        assert shape[0] == 2 and entry.extra_chunks("track_crops")[:2] == (1, 6)
        whole = entry.extra("track_crops")
        np.testing.assert_array_equal(entry.extra_rows("track_crops", 10, 23, (1,)), whole[1, 10:23])
        np.testing.assert_array_equal(entry.extra_rows("crops", 5, 9), entry.extra("crops")[5:9])


KILLER = """
import os, signal, sys
import avpipe.pipeline.chunks as chunks
import avpipe.extractors.faces as faces
chunks.CHUNK_FRAMES = 8
calls = {"stream": 0}
stream, take = faces.Faces.stream, faces.FaceTracker.take
def stream_(self, *a, **k):
    calls["stream"] += 1
    return stream(self, *a, **k)
def take_(self, start, stop):
    if calls["stream"] == 2 and start >= 16:  # second video of the task, some chunks written
        os.kill(os.getpid(), signal.SIGKILL)
    return take(self, start, stop)
faces.Faces.stream, faces.FaceTracker.take = stream_, take_
from avpipe.cli import main
sys.exit(main())
"""


def test_sigkill_while_faces_rows_are_written_indexes_nothing_partial(tmp_path, default_chunks):
    """Killed after a complete video and the first chunks of the next reached the task's temp
    shard: no faces entry is indexed, ``cache gc`` removes the orphan, a rerun equals a clean run
    (the same faces entries as the uninterrupted run of the fixture above)."""
    vids = tmp_path / "v"
    vids.mkdir()
    for c in CLIPS[:2]:
        shutil.copy(MEDIA / c, vids / c)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["extract", "--videos", str(vids), "--stages", "faces", "--device", "cpu", "--jobs", "1",
            "--num-threads", "1", "--no-progress", "--cache"]
    cache = tmp_path / "killed"
    r = subprocess.run([sys.executable, "-c", KILLER, *args, str(cache)], env=env, capture_output=True,
                       text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    with Cache(cache) as c:
        assert not [e for e in c.list() if e.stage == "faces"]
    temps = [p for p in (cache / "shards" / "faces").rglob("*") if p.is_file()]
    assert temps and all(p.name.endswith(".tmp") for p in temps)
    import h5py

    with h5py.File(temps[0], "r") as h5:  # one video complete, the next one mid-write
        assert len(h5.keys()) >= 1
    avpipe = [sys.executable, "-m", "avpipe"]
    g = subprocess.run(avpipe + ["cache", "gc", "--cache", str(cache)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert g.returncode == 0, g.stdout + g.stderr
    assert not [p for p in (cache / "shards" / "faces").rglob("*") if p.is_file()]
    r = subprocess.run(avpipe + args + [str(cache)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = cache_digests(cache, ("faces",))
    assert len(got) == 2 and got == {k: v for k, v in default_chunks.items() if k in got}


def test_block_array_extras_are_stored_chunked_along_frames_and_checked(tmp_path):
    import h5py

    from avpipe.pipeline.chunks import BlockArray, dense
    from avpipe.pipeline.shard import write_result
    from avpipe.pipeline.types import StageResult

    whole = np.arange(2 * 50 * 3, dtype=np.float32).reshape(2, 50, 3)

    def blocks(short: bool = False):
        for t in range(2):
            for a in range(0, 40 if short else 50, 16):
                yield (t, slice(a, min(50, a + 16))), whole[t, a:a + 16]

    res = StageResult(data=np.zeros((50, 1), np.float32), extras={"x": BlockArray(whole.shape, np.float32, blocks)})
    np.testing.assert_array_equal(dense(res).extras["x"], whole)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        write_result(h5, "v", res, {})
        ds = h5["v/extras/x"]
        np.testing.assert_array_equal(ds[()], whole)
        assert ds.chunks[0] == 1
        short = StageResult(data=res.data, extras={"x": BlockArray(whole.shape, np.float32,
                                                                   lambda: blocks(short=True))})
        with pytest.raises(ValueError, match="blocks cover"):
            write_result(h5, "w", short, {})


def test_visual_reads_crops_stored_whole_by_older_code(default_run, tmp_path):
    """A faces entry written as whole arrays (one chunk per track, as before streaming, or by
    crop-tree ingestion) gives the same visual rows as the streamed entry."""
    import h5py

    from avpipe.extractors.visual import Visual, VisualConfig
    from avpipe.pipeline.chunks import dense
    from avpipe.pipeline.entry import ShardEntry
    from avpipe.pipeline.shard import write_result
    from avpipe.pipeline.types import StageResult

    with Cache(default_run[0]) as c:
        e = next(x for x in c.list() if x.stage == "faces"
                 and c.read("faces", x.content_id, fingerprint=x.fingerprint).attrs["sides"])
        new = c.read("faces", e.content_id, fingerprint=e.fingerprint)
        old = StageResult(data=new.data, mask=new.mask, attrs=new.attrs,
                          extras={k: new.extra(k) for k in new.extras})
        with h5py.File(tmp_path / "old.h5", "w") as h5:
            write_result(h5, "v", old, {})
        old_entry = ShardEntry(tmp_path / "old.h5", stage="faces", fingerprint="f", content_id="v")
        assert old_entry.extra_chunks("track_crops")[1] == len(new.mask)  # the whole track in one chunk
        st = Visual(VisualConfig("hog"), Runtime(device="cpu", batch_size=5))
        a, b = dense(st.compute(None, {"faces": new})), dense(st.compute(None, {"faces": old_entry}))
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.extras["track_data"], b.extras["track_data"])
    assert a.mask.any() and a.extras["track_mask"].any()
