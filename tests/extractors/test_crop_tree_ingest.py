"""The crop-tree ingest through the runner: the same fingerprints and entries as the recipe
fixed before, no MTCNN faces under the crop tree's fingerprint, the lock held, resume after a
crash, and the visual entries' weights recorded."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from avpipe.extractors import crop_tree
from avpipe.extractors.crop_tree import crops_result, find_folders, ingest_crop_tree, scan_video
from avpipe.pipeline.store import Cache
from tests.extractors.test_crop_tree import N, _ingest, tree  # noqa: F401 - fixture
from tests.media import make_clip
from tests.pipeline.subproc import REPO


def _quiet(m: str) -> None:
    pass


def _snapshot(cache_root, fps: dict[str, str]) -> dict[tuple[str, str], tuple]:
    """{(stage, key): (every dataset's bytes, attrs but the creation facts)} under ``fps``."""
    out = {}
    with Cache(cache_root) as c:
        for stage, fp in fps.items():
            for e in c.list(stage=stage):
                if e.fingerprint != fp:
                    continue
                ent = c.read(stage, e.content_id, fingerprint=fp)
                with h5py.File(ent.shard, "r") as h5:
                    g, names = h5[ent.content_id], []
                    g.visit(names.append)
                    data = tuple((n, g[n][()].tobytes()) for n in names if isinstance(g[n], h5py.Dataset))
                    attrs = {k: str(v) for k, v in g.attrs.items() if k not in ("packages_json", "created")}
                out[(stage, e.keys[0])] = (data, tuple(sorted(attrs.items())))
    return out


def test_fingerprints_and_entries_follow_the_fixed_recipe(tree):  # noqa: F811
    """faces: the precomputed recipe over the crops' content; visual: the visual stage's
    fingerprint over those faces, its rows what the stage computes from the crops in memory."""
    from avpipe.extractors.visual import Visual, VisualConfig
    from avpipe.pipeline.entry import MemoryEntry
    from avpipe.pipeline.fingerprint import precomputed_fingerprint, stage_fingerprint

    root, videos, crops = tree
    rep = ingest_crop_tree(crops, videos, root / "cache", backbone="hog", log=_quiet)
    with Cache(root / "cache") as c:
        probe = c.read("probe", "batch1/v1.mp4")
    digests = {k: scan_video(k, find_folders(crops, k), N)[1] for k in ("batch1/v1.mp4", "batch2/v2.mp4")}
    content = hashlib.sha256("\n".join(sorted(f"{k}:{d}" for k, d in digests.items())).encode()).hexdigest()
    faces_fp = precomputed_fingerprint("faces", {"source": "cropped_aligned", "crop_size": None,
                                                 "probe": str(probe.fingerprint), "content": content}, "crops-1")
    stage = Visual(VisualConfig(backbone="hog"))
    visual_fp = stage_fingerprint(stage, {"probe": str(probe.fingerprint), "faces": faces_fp}).value
    assert (rep.faces_fingerprint, rep.visual_fingerprint) == (faces_fp, visual_fp)
    res, _ = crops_result("batch2/v2.mp4", find_folders(crops, "batch2/v2.mp4"), N)
    want = stage.compute(None, {"faces": MemoryEntry(res, stage="faces", fingerprint=faces_fp,  # type: ignore[arg-type]
                                                     content_id="x")})
    cols = want.data.materialize_columns()  # a RowChunks: the rows and the mask, column by column
    assert np.abs(cols["data"]).sum() > 0
    with Cache(root / "cache") as c:
        f2 = c.read("faces", "batch2/v2.mp4", fingerprint=faces_fp)
        np.testing.assert_array_equal(f2.data, res.data)
        np.testing.assert_array_equal(f2.extra("track_crops"), res.extras["track_crops"])
        assert f2.attrs["content_digest"] == digests["batch2/v2.mp4"]
        v2 = c.read("visual", "batch2/v2.mp4", fingerprint=visual_fp)
        np.testing.assert_array_equal(v2.data, cols["data"])
        np.testing.assert_array_equal(v2.mask, cols["mask"])
        np.testing.assert_array_equal(v2.extra("track_data"), want.extras["track_data"])


def test_a_video_without_crops_fails_and_never_gets_mtcnn_faces(tree, monkeypatch):  # noqa: F811
    from avpipe.extractors import faces

    root, videos, crops = tree
    make_clip(videos / "v3.mp4", seed=3, seconds=N / 10)  # no folder v3/ in the tree
    called: list[str] = []
    monkeypatch.setattr(faces.Faces, "load", lambda self: called.append("load"))
    monkeypatch.setattr(faces.Faces, "compute", lambda self, video, inputs: called.append(video.key))
    r = _ingest(videos, crops, root / "cache")
    assert r.exit_code == 1 and "ingested 2 video(s), 1 failed" in r.output, r.output
    assert "FAILED v3.mp4: v3.mp4: no crop folder v3/" in r.output
    assert called == []
    fp = [ln.split()[-1] for ln in r.output.splitlines() if ln.startswith("faces fingerprint")][0]
    with Cache(root / "cache") as c:
        v3 = c.index.content_ids_for_key("v3.mp4")[0]
        assert [e for e in c.list(stage="faces") if e.content_id == v3] == []  # under no fingerprint
        fails = c.index.failures(stage="faces", content_id=v3)
        assert [(f.fingerprint, f.error_type) for f in fails] == [(fp, "CropTreeError")]
        assert not [e for e in c.list(stage="visual") if e.content_id == v3]


def test_the_cache_lock_is_held_while_crops_are_read(tree, monkeypatch):  # noqa: F811
    from filelock import FileLock, Timeout

    from avpipe.pipeline.lock import LOCK_NAME

    root, videos, crops = tree
    cache = root / "cache"
    held: list[bool] = []
    real = crop_tree.crops_result

    def probing(key, *a, **k):
        try:
            FileLock(str(cache / LOCK_NAME), is_singleton=False).acquire(timeout=0)
        except Timeout:
            held.append(True)
        else:
            held.append(False)
        return real(key, *a, **k)

    monkeypatch.setattr(crop_tree, "crops_result", probing)
    rep = ingest_crop_tree(crops, videos, cache, backbone=None, log=_quiet)
    assert rep.ingested == ["batch1/v1.mp4", "batch2/v2.mp4"] and held == [True, True]


def test_sigkill_mid_ingest_then_rerun_equals_a_clean_ingest(tree, monkeypatch):  # noqa: F811
    root, videos, crops = tree
    clean = ingest_crop_tree(crops, videos, root / "clean", backbone="hog", log=_quiet)
    cache = root / "cache"
    script = textwrap.dedent(f"""
        import os, signal
        from avpipe.extractors import crop_tree
        real = crop_tree.crops_result
        def dying(key, *a, **k):
            if "v2" in key:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(key, *a, **k)
        crop_tree.crops_result = dying
        crop_tree.ingest_crop_tree({str(crops)!r}, {str(videos)!r}, {str(cache)!r}, backbone="hog", chunk=1,
                                   log=lambda m: None)
    """)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with Cache(cache) as c:  # the task committed before the kill is kept; the one in flight is not
        assert [e.keys[0] for e in c.list(stage="faces")] == ["batch1/v1.mp4"]
    read: list[str] = []
    real = crop_tree.crops_result
    monkeypatch.setattr(crop_tree, "crops_result", lambda key, *a, **k: (read.append(key), real(key, *a, **k))[1])
    again = ingest_crop_tree(crops, videos, cache, backbone="hog", log=_quiet)
    assert read == ["batch2/v2.mp4"]  # only what was lost
    assert (again.faces_fingerprint, again.visual_fingerprint, again.ingested, again.failed) == \
        (clean.faces_fingerprint, clean.visual_fingerprint, clean.ingested, clean.failed)
    fps = {"faces": clean.faces_fingerprint, "visual": clean.visual_fingerprint}
    assert _snapshot(cache, fps) == _snapshot(root / "clean", fps)
    v = subprocess.run([sys.executable, "-m", "avpipe", "cache", "verify", "--cache", str(cache)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr


def test_visual_entries_record_the_weights_their_fingerprint_hashes(tree, monkeypatch):  # noqa: F811
    from avpipe.extractors.visual import Visual

    root, videos, crops = tree
    monkeypatch.setattr(Visual, "weights_id", lambda self: "sha256:" + "9" * 16)
    rep = ingest_crop_tree(crops, videos, root / "cache", backbone="hog", log=_quiet)
    with Cache(root / "cache") as c:
        assert c.index.fingerprint_row(rep.visual_fingerprint)["weights_id"] == "sha256:" + "9" * 16
        e = c.read("visual", "batch1/v1.mp4", fingerprint=rep.visual_fingerprint)
        with h5py.File(e.shard, "r") as h5:
            attrs = dict(h5[e.content_id].attrs)
    assert attrs["weights_id"] == "sha256:" + "9" * 16 and attrs["fingerprint"] == rep.visual_fingerprint
    assert json.loads(attrs["upstream_json"])["faces"] == rep.faces_fingerprint


def test_missing_backbone_weights_stop_the_ingest_before_anything_is_written(tree, monkeypatch):  # noqa: F811
    from avpipe.extractors.visual import Visual
    from avpipe.pipeline.types import WeightsMissingError

    def missing(self):
        raise WeightsMissingError("weights 'hog' are not available (test)")

    root, videos, crops = tree
    monkeypatch.setattr(Visual, "weights_id", missing)
    with pytest.raises(WeightsMissingError, match="weights 'hog' are not available"):
        ingest_crop_tree(crops, videos, root / "cache", backbone="hog", log=_quiet)
    assert not (root / "cache").exists()
