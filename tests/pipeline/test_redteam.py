"""Red-team replays (issue 19): each case an attack that once poisoned or lost cache contents.

Every test builds its own files; none needs root, a mount or a GPU. A case that can only be
shown on a second filesystem is simulated through the stat facts it depends on.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from avpipe.pipeline import discover as disc
from avpipe.pipeline.discover import FoundFile, content_hash, identify, iter_video_files
from avpipe.pipeline.runner import run_extract
from avpipe.pipeline.stage import get_stage_class
from avpipe.pipeline.store import Cache


def _run(cache, videos, **kw):
    kw.setdefault("stages", ["toy_a"])
    kw.setdefault("progress", False)
    return run_extract(cache, videos, **kw)


# -- 1. content identity ------------------------------------------------------------------------
def test_memo_is_keyed_by_device_two_mounts_same_inode(tmp_path, clip_bank):
    """Two different files with equal size, inode, mtime and ctime on two filesystems must not
    share a content id: the second one is hashed."""
    shutil.copy(clip_bank / "c0.mp4", tmp_path / "a.mp4")
    shutil.copy(clip_bank / "c1.mp4", tmp_path / "b.mp4")
    a = next(iter_video_files(tmp_path / "a.mp4"))
    memo = {a.memo_key: content_hash(a.path)}
    twin = FoundFile("b.mp4", tmp_path / "b.mp4", a.size, a.mtime_ns, a.inode, a.dev + 1, a.ctime_ns)
    (v,) = identify([twin], memo)
    assert v.hashed and v.content_id == content_hash(tmp_path / "b.mp4")


def test_memo_misses_when_mtime_is_set_back(tmp_path, clip_bank):
    """Rewriting a file and restoring its mtime (``touch -d``) changes ctime: hashed again."""
    p = tmp_path / "a.mp4"
    shutil.copy(clip_bank / "c0.mp4", p)
    before = next(iter_video_files(p))
    memo = {before.memo_key: content_hash(p)}
    st = p.stat()
    data = p.read_bytes()
    p.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, new bytes
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = next(iter_video_files(p))
    (v,) = identify([after], memo)
    assert v.hashed and v.content_id == content_hash(p) != memo[before.memo_key]


def test_file_changing_while_hashed_is_hashed_again(tmp_path, clip_bank, monkeypatch):
    p = tmp_path / "a.mp4"
    shutil.copy(clip_bank / "c0.mp4", p)
    f = next(iter_video_files(p))
    real = disc.content_hash
    calls = []

    def hash_then_swap(path):
        h = real(path)
        if not calls:  # the first read sees the old bytes, then the file is replaced
            shutil.copy(clip_bank / "c1.mp4", tmp_path / "new.mp4")
            os.replace(tmp_path / "new.mp4", p)
        calls.append(h)
        return h

    monkeypatch.setattr(disc, "content_hash", hash_then_swap)
    (v,) = identify([f], {})
    assert len(calls) == 2 and v.content_id == real(clip_bank / "c1.mp4")
    assert v.identity == disc.stat_identity(p.stat())


def test_video_replaced_between_hash_and_decode_is_not_cached(tmp_path, clip_bank, monkeypatch, toy_log):
    """The file is swapped after discovery hashed it and before probe decodes it: nothing is
    stored under the old bytes' id, the video fails for this run (transient, with a message) and
    a pristine copy of the original later gets its own, correct features."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(clip_bank / "c0.mp4", videos / "a.mp4")  # 10 frames
    shutil.copy(clip_bank / "c2.mp4", videos / "b.mp4")
    probe = get_stage_class("probe")
    real = probe.compute
    swapped = []

    def swap_then_compute(self, video, inputs):
        if video.key == "a.mp4" and not swapped:
            shutil.copy(clip_bank / "c1.mp4", videos / ".new")  # 15 frames
            os.replace(videos / ".new", videos / "a.mp4")
            swapped.append(video.content_id)
        return real(self, video, inputs)

    monkeypatch.setattr(probe, "compute", swap_then_compute)
    s = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s.exit_code == 1
    (f,) = s.failures
    assert f.error_type == "SourceChanged" and f.transient and f.key == "a.mp4"
    assert "changed while it was processed" in f.message and "discarded" in f.message
    assert "FAILED probe a.mp4: SourceChanged" in s.render()
    old_cid = swapped[0]
    with Cache(tmp_path / "cache") as c:
        assert c.index.entry(c.resolve("probe"), old_cid) is None
        assert old_cid not in c.index.failed(c.resolve("probe"))  # transient: retried next run
    monkeypatch.setattr(probe, "compute", real)
    # next run: the new bytes get their own id; a pristine copy of the original gets its own rows
    shutil.copy(clip_bank / "c0.mp4", videos / "pristine.mp4")
    s2 = _run(tmp_path / "cache", videos, stages=["probe"])
    assert s2.exit_code == 0, s2.render()
    with Cache(tmp_path / "cache") as c:
        assert len(c.read("probe", "pristine.mp4").data) == 10
        assert len(c.read("probe", "a.mp4").data) == 15
