"""The MTCNN cascade module: the pieces O-net tracking is built from."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.extractors.mtcnn import move_inputs
from avpipe.extractors.tracking import iou


def test_move_keeps_the_inputs_place_relative_to_the_face():
    src = np.array([100.0, 100.0, 200.0, 220.0])
    inputs = np.array([[90.0, 105.0, 210.0, 225.0], [100.0, 100.0, 200.0, 200.0]])
    same = move_inputs(inputs, src, src)
    np.testing.assert_allclose(same, inputs)
    dst = np.array([110.0, 90.0, 310.0, 330.0])  # shifted, twice the size
    moved = move_inputs(inputs, src, dst)
    np.testing.assert_allclose(moved[:, 2] - moved[:, 0], 2 * (inputs[:, 2] - inputs[:, 0]))
    np.testing.assert_allclose(moved[:, 3] - moved[:, 1], 2 * (inputs[:, 3] - inputs[:, 1]))  # still square
    # the face-centre-relative offset doubles with the size
    c_src, c_dst = np.array([150.0, 160.0]), np.array([210.0, 210.0])
    np.testing.assert_allclose(moved[:, :2] - c_dst, 2 * (inputs[:, :2] - c_src))


# -- the cascade's mechanics: each faster helper against the reference it replaces -------------

def _engine():
    from avpipe.extractors.faces import FacesConfig
    from avpipe.extractors.mtcnn import MtcnnEngine

    return MtcnnEngine(FacesConfig())


def _per_box_net_input(src, boxes, side):
    """The R/O-net input step as facenet-pytorch's detect_face does it: one imresample per box."""
    import torch
    from facenet_pytorch.models.utils.detect_face import imresample, pad

    y, ey, x, ex = pad(boxes, src.shape[1], src.shape[0])
    keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    data = torch.cat([imresample(src[y[k] - 1:ey[k], x[k] - 1:ex[k]].permute(2, 0, 1).contiguous()
                                 .unsqueeze(0).float(), (side, side)) for k in keep])
    return boxes[keep], (data - 127.5) * 0.0078125


@pytest.mark.parametrize("side", [24, 48])
def test_net_input_equals_per_box_imresample_with_boxes_partly_outside_and_tiny(side):
    import torch

    from avpipe.extractors.mtcnn import MtcnnEngine

    rng = np.random.default_rng(side)
    H, W = 90, 160
    src = torch.from_numpy(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    x0 = rng.uniform(-40, W + 10, 30)
    y0 = rng.uniform(-40, H + 10, 30)
    s = rng.uniform(0.5, 120, 30)
    boxes = np.stack([x0, y0, x0 + s, y0 + s, rng.uniform(0.5, 1, 30)], 1)
    boxes[:3, :4] = [[-30, -30, 5.5, 5.5], [W - 2.2, H - 3.7, W + 50, H + 50], [10, 10, 11, 11]]  # corners, 1 px
    boxes[3, :4] = [W + 5, 10, W + 40, 45]  # wholly outside: dropped by both
    boxes = torch.from_numpy(boxes.astype(np.float32))
    got_b, got = MtcnnEngine._net_input(src, boxes.clone(), side)
    want_b, want = _per_box_net_input(src, boxes.clone(), side)
    assert len(want_b) < len(boxes)  # some were dropped
    assert torch.equal(got_b, want_b) and torch.equal(got, want)
    assert MtcnnEngine._net_input(src, boxes[3:4].clone(), side) is None


def test_window_cascade_unchanged_by_batched_crops(talking_head, monkeypatch):
    """The whole window cascade (P/R/O-net) with the batched crops gives what per-box crops give."""
    import torch

    from avpipe.extractors import mtcnn
    from avpipe.extractors.media import iter_frames

    frames = [f for _, f in zip(range(4), iter_frames(talking_head.path))]
    eng = _engine()
    face = eng.detect(frames[:1])[0][0][0]
    got = [eng.roi_cascade(f, face) for f in frames]

    def per_box(frame, y0, y1, x0, x1, side):
        src = torch.from_numpy(frame)
        return torch.cat([torch.nn.functional.interpolate(
            src[a:b, c:d].permute(2, 0, 1).contiguous().unsqueeze(0).float(), size=(side, side), mode="area")
            for a, b, c, d in zip(y0, y1, x0, x1)]).numpy()

    monkeypatch.setattr(mtcnn, "area_crops", per_box)
    want = [eng.roi_cascade(f, face) for f in frames]
    for a, b in zip(got, want):
        assert len(a.boxes) >= 1
        for name in ("boxes", "points", "inputs", "picks"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_frozen_pnet_equals_the_eager_net_on_any_input_size():
    import torch
    from facenet_pytorch.models.mtcnn import PNet

    from avpipe.extractors.mtcnn import _frozen

    eager = PNet().eval().to(memory_format=torch.channels_last)
    fast = _frozen(eager)
    assert fast is not eager  # this torch can freeze it
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for _ in range(2):  # and again once TorchScript has profiled the shapes
            for h, w in ((12, 12), (13, 31), (96, 96), (57, 140), (181, 321)):
                x = torch.rand(1, 3, h, w, generator=gen) * 2 - 1
                for a, b in zip(eager(x), fast(x)):
                    assert torch.equal(a, b)


def test_frozen_keeps_the_eager_net_when_the_trace_differs():
    import torch

    from avpipe.extractors.mtcnn import _frozen

    class SizeDependent(torch.nn.Module):  # a trace bakes the branch of the traced size in
        def forward(self, x):
            return (x * 2.0,) if x.shape[-1] > 20 else (x * 3.0,)

    net = SizeDependent()
    assert _frozen(net) is net


def test_single_class_nms_equals_batched_nms_with_one_class():
    import torch
    from torchvision.ops import batched_nms

    from avpipe.extractors.mtcnn import _nms

    rng = np.random.default_rng(0)
    for n in (0, 1, 40, 1200):  # 1200 boxes: above torchvision's switch to its per-class path
        xy = rng.uniform(-20, 300, (n, 2))
        wh = rng.uniform(1, 60, (n, 2))
        boxes = torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32))
        scores = torch.from_numpy(rng.choice([0.5, 0.7, 0.9], n).astype(np.float32))  # ties
        for thr in (0.5, 0.7):
            want = batched_nms(boxes, scores, torch.zeros(n, dtype=torch.long), thr)
            assert torch.equal(_nms(boxes, scores, thr), want)


def test_level_matrix_is_the_area_matrix_cached():
    import torch

    from avpipe.extractors.mtcnn import _area_matrix, _level_matrix

    m, i0, i1 = _area_matrix(640, 321, 40, 90)
    t, j0, j1 = _level_matrix(640, 321, 40, 90, torch.device("cpu"))
    assert (i0, i1) == (j0, j1) and torch.equal(t, torch.from_numpy(m))
    tt, _, _ = _level_matrix(640, 321, 40, 90, torch.device("cpu"), transposed=True)
    assert torch.equal(tt, torch.from_numpy(m).t())
    assert _level_matrix(640, 321, 40, 90, torch.device("cpu"))[0] is t  # a tracked face's next frame


def _key_frames(talking_head, two_faces_tone):
    import cv2

    from avpipe.extractors.media import iter_frames

    th = [f for _, f in zip(range(31), iter_frames(talking_head.path))]
    two = next(iter(iter_frames(two_faces_tone.path)))
    big = cv2.resize(th[5], (960, 720), interpolation=cv2.INTER_LINEAR)  # above detect_max_side
    return {"talking head": th[0], "talking head 30": th[30], "two faces": two, "960x720": big,
            "black": np.zeros_like(th[0])}


def test_detect_one_is_the_full_cascade_bit_for_bit_with_onet_inputs(talking_head, two_faces_tone, monkeypatch):
    """The stage's own full cascade answers exactly as facenet-pytorch's ``detect_face`` (through
    :meth:`detect`) — at full resolution, down-scaled, with two faces, with none — and keeps
    O-net's input box for every candidate; with the pyramid resized by PyTorch (the fallback)
    the answer is the same."""
    from avpipe.extractors import area_crops as ac
    from avpipe.extractors.mtcnn import onet_anchor

    eng = _engine()
    frames = _key_frames(talking_head, two_faces_tone)
    got = {}
    for name, frame in frames.items():
        (b, p), = eng.detect([frame])
        c = eng.detect_one(frame)
        got[name] = c
        np.testing.assert_array_equal(c.boxes[c.picks], b, err_msg=name)
        np.testing.assert_array_equal(c.points[c.picks], p, err_msg=name)
        assert len(c.inputs) == len(c.boxes)
        side_x, side_y = c.inputs[:, 2] - c.inputs[:, 0], c.inputs[:, 3] - c.inputs[:, 1]
        np.testing.assert_allclose(side_x, side_y, rtol=0, atol=1e-3)  # R-net's boxes are square
        for k in c.picks:
            box, inputs = onet_anchor(c, int(k), 4)
            assert 1 <= len(inputs) <= 4
            assert (iou(box, inputs) > 0.3).all()  # the inputs lie on the face they anchor
    assert [len(got[k].picks) for k in frames] == [1, 1, 2, 1, 0]
    monkeypatch.setattr(ac, "area_resize", lambda table, h, w: None)
    for name in ("talking head", "two faces"):
        c = eng.detect_one(frames[name])
        np.testing.assert_array_equal(c.boxes, got[name].boxes)
        np.testing.assert_array_equal(c.inputs, got[name].inputs)
