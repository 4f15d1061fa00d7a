"""The visual stage and its backbones on real aligned crops."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from avpipe.extractors.backbones import backbone_names, create_backbone
from avpipe.extractors.visual import Visual, VisualConfig
from avpipe.extractors.weights import WeightsMissingError
from avpipe.pipeline.chunks import dense
from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.stage import Runtime
from tests.extractors.test_faces import run_faces


@pytest.fixture(scope="module")
def faces_entry(short_silent):
    res, _ = run_faces(short_silent.path)
    assert res.mask.all()
    res.mask[3] = False  # pretend one frame had no face
    return MemoryEntry(res, stage="faces")


def _visual(name, faces_entry, batch_size=4):
    st = Visual(VisualConfig(name), Runtime(device="cpu", batch_size=batch_size))
    return dense(st.compute(None, {"faces": faces_entry}))  # whole arrays (the stage streams its rows)


def test_registry_has_builtins():
    assert {"facenet-vggface2", "dlib", "hog"} <= set(backbone_names())
    with pytest.raises(ValueError, match="unknown backbone"):
        Visual(VisualConfig("nope"))


def test_hog_shapes_mask_determinism(faces_entry):
    a = _visual("hog", faces_entry)
    n = len(faces_entry.mask)
    assert a.data.shape == (n, 6084) and a.data.dtype == np.float32
    assert not a.mask[3] and np.all(a.data[3] == 0) and a.mask.sum() == n - 1
    assert np.all(np.linalg.norm(a.data[a.mask], axis=1) > 0)
    b = _visual("hog", faces_entry, batch_size=3)  # batching does not change the output
    np.testing.assert_array_equal(a.data, b.data)
    assert Visual(VisualConfig("hog")).weights_id() is None


def test_dlib_same_person_close(faces_entry):
    pytest.importorskip("dlib")
    r = _visual("dlib", faces_entry)
    e = r.data[r.mask]
    assert e.shape[1] == 128
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    assert d.max() < 0.6  # dlib's same-person threshold
    np.testing.assert_array_equal(r.data, _visual("dlib", faces_entry).data)
    assert Visual(VisualConfig("dlib")).weights_id().startswith("dlib:")


def test_facenet_missing_weights_is_one_clear_error(tmp_path, monkeypatch):
    from avpipe.extractors import weights as W

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    spec = W.get_spec("facenet-vggface2")
    monkeypatch.setitem(W._SPECS, spec.name, dataclasses.replace(spec, obtain=None))  # never download
    st = Visual()  # the default backbone
    assert st.config.backbone == "facenet-vggface2"
    with pytest.raises(WeightsMissingError) as ei:
        st.weights_id()
    msg = str(ei.value)
    assert "20180402-114759-vggface2.pt" in msg and "--weights facenet-vggface2=" in msg
    assert "checkpoints" in msg
    with pytest.raises(WeightsMissingError):
        st.load()


def test_facenet_user_path_and_random_init_only_explicit(tmp_path, faces_entry):
    import torch

    bb = create_backbone("facenet-vggface2", random_init_for_tests=True)
    bb.load("cpu", {})
    crops = faces_entry.extra("crops")[:3]
    e = bb.embed(crops)
    assert e.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # a user-given state_dict is loaded (and its checksum is the weights id)
    p = tmp_path / "fn.pt"
    torch.save(bb._model.state_dict(), p)
    real = create_backbone("facenet-vggface2")
    assert real.weights_id({"facenet-vggface2": str(p)})
    real.load("cpu", {"facenet-vggface2": str(p)})
    np.testing.assert_allclose(real.embed(crops), e, atol=1e-5)
    with pytest.raises(WeightsMissingError, match="not found at the path you gave"):
        real.weights_id({"facenet-vggface2": str(tmp_path / "missing.pt")})


def test_facenet_file_that_does_not_load_safely_is_one_clear_error(tmp_path):
    """A pickle with code in it, or any non-checkpoint: refused by ``weights_only``, reported as one
    error naming the file and what is expected, never torch's advice to turn ``weights_only`` off."""
    import os
    import pickle

    import torch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"conv2d_1a.conv.weight": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    for name in ("evil.pt", "text.pt"):
        bb = create_backbone("facenet-vggface2")
        with pytest.raises(WeightsMissingError) as ei:
            bb.load("cpu", {"facenet-vggface2": str(tmp_path / name)})
        msg = str(ei.value)
        assert name in msg and "--weights facenet-vggface2=PATH" in msg and "weights_only=False" not in msg
    assert isinstance(ei.value.__cause__, (pickle.UnpicklingError, RuntimeError, EOFError, ValueError))
    assert not marker.exists()


def test_end_to_end_backbone_change_reuses_crops(tmp_path, short_silent, no_face_no_audio):
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.store import Cache

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(short_silent.path, videos / "a.mp4")
    shutil.copy(no_face_no_audio.path, videos / "b.mp4")
    cache = tmp_path / "cache"

    def run(backbone):
        cfg = PipelineConfig.from_dict({"stages": {"visual": {"backbone": backbone}}})
        s = run_extract(cache, videos, cfg, stages=["visual"], progress=False,
                        runtime=Runtime(device="cpu"))
        assert s.ok, s.render()
        return {st.name: st for st in s.stages}

    first = run("hog")
    assert first["faces"].computed == 2 and first["visual"].computed == 2
    second = run("dlib")
    assert second["faces"].computed == 0 and second["faces"].cached == 2  # crops reused
    assert second["visual"].computed == 2
    assert first["faces"].fingerprint == second["faces"].fingerprint
    assert first["visual"].fingerprint != second["visual"].fingerprint
    with Cache(cache) as c:
        v = c.read("visual", "a.mp4", fingerprint=second["visual"].fingerprint)
        f = c.read("faces", "a.mp4")
        assert v.data.shape == (short_silent.truth["n_frames"], 128) and v.mask.all()
        assert f.extra("crops").shape == (short_silent.truth["n_frames"], 112, 112, 3)
        nb = c.read("visual", "b.mp4", fingerprint=second["visual"].fingerprint)
        assert not nb.mask.any() and np.all(nb.data == 0)
