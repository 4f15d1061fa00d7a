"""Batched area crops against the reference they replace: ``F.interpolate(mode="area")`` per crop
(facenet-pytorch's ``imresample``), bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avpipe.extractors import area_crops as ac
from avpipe.extractors.area_crops import area_bins, area_crops


def _reference(frame: np.ndarray, y0, y1, x0, x1, side: int) -> torch.Tensor:
    """MTCNN's crop step: each crop NCHW float, area-resampled on its own."""
    src = torch.from_numpy(frame)
    return torch.cat([F.interpolate(src[a:b, c:d].permute(2, 0, 1).contiguous().unsqueeze(0).float(),
                                    size=(side, side), mode="area")
                      for a, b, c, d in zip(y0, y1, x0, x1)])


def _random_crops(rng, H, W, n, lo=1, hi=None):
    hi = hi or max(H, W)
    y0 = rng.integers(0, H, n)
    x0 = rng.integers(0, W, n)
    y1 = np.minimum(H, y0 + rng.integers(lo, hi + 1, n))
    x1 = np.minimum(W, x0 + rng.integers(lo, hi + 1, n))
    return y0, y1, x0, x1


@pytest.mark.parametrize("side", [24, 48, 7])
def test_equals_per_crop_area_interpolation_bit_for_bit(side):
    rng = np.random.default_rng(side)
    for H, W in ((120, 200), (37, 23), (300, 90)):
        frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        # sizes from 1 px (upsampled: bins repeat pixels) to the whole frame (bins overlap when
        # the side does not divide the size), crops touching every edge
        y0, y1, x0, x1 = _random_crops(rng, H, W, 40)
        y0, y1 = np.r_[y0, 0, H - 1, 0, 5], np.r_[y1, H, H, 1, 7]
        x0, x1 = np.r_[x0, 0, W - 1, W - 2, 0], np.r_[x1, W, W, W, 1]
        got = torch.from_numpy(area_crops(frame, y0, y1, x0, x1, side))
        want = _reference(frame, y0, y1, x0, x1, side)
        assert got.shape == want.shape == (len(y0), 3, side, side)
        assert got.is_contiguous() and got.dtype == torch.float32
        assert torch.equal(got, want)


def test_extreme_pixel_values_and_the_wide_accumulator(monkeypatch):
    """All-255 frames give the largest sums; with the int32 bound lowered the int64 path runs."""
    rng = np.random.default_rng(1)
    frame = np.full((90, 160, 3), 255, np.uint8)
    frame[::7] = rng.integers(0, 256, frame[::7].shape, dtype=np.uint8)
    y0, y1, x0, x1 = _random_crops(rng, 90, 160, 20, lo=3)
    want = _reference(frame, y0, y1, x0, x1, 24)
    assert torch.equal(torch.from_numpy(area_crops(frame, y0, y1, x0, x1, 24)), want)
    monkeypatch.setattr(ac, "_INT32_MAX", 10)
    assert torch.equal(torch.from_numpy(area_crops(frame, y0, y1, x0, x1, 24)), want)


def test_bins_are_pytorchs():
    start, end = area_bins(np.array([5, 48, 100]), 48)
    x = torch.arange(100, dtype=torch.float64).view(1, 1, 100)
    for k, n in enumerate((5, 48, 100)):
        ref = F.adaptive_avg_pool1d(x[..., :n], 48).view(-1).numpy()
        mine = np.array([np.arange(a, b).mean() for a, b in zip(start[k], end[k])])
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-12)


def test_bad_crops_are_refused_with_the_crop_named():
    frame = np.zeros((10, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="crop 1 rows 4:4"):
        area_crops(frame, [0, 4], [5, 4], [0, 0], [5, 5], 24)
    with pytest.raises(ValueError, match="outside the 10x20 frame"):
        area_crops(frame, [0], [5], [15], [21], 24)
    with pytest.raises(ValueError, match="outside"):
        area_crops(frame, [-1], [5], [0], [5], 24)
    with pytest.raises(ValueError, match="uint8"):
        area_crops(frame.astype(np.float32), [0], [5], [0], [5], 24)
    with pytest.raises(ValueError, match="one entry per crop"):
        area_crops(frame, [0, 1], [5], [0], [5], 24)
    assert area_crops(frame, [], [], [], [], 24).shape == (0, 3, 24, 24)


# -- the whole image resized (MTCNN's pyramid levels) -----------------------------------------

@pytest.mark.parametrize("shape", [(360, 640), (361, 479), (97, 53)])
def test_area_resize_equals_area_interpolation_of_the_whole_image(shape):
    """Every level of an MTCNN pyramid (and an upsampled one) equals PyTorch's area resize of
    the frame as facenet-pytorch feeds it (float, channels-last strides) bit for bit."""
    rng = np.random.default_rng(sum(shape))
    H, W = shape
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    frame[: H // 3] = 255  # the largest sums too
    image = torch.from_numpy(frame.copy()).unsqueeze(0).permute(0, 3, 1, 2).float()
    table = ac.integral_image(frame)
    assert table.shape == (H + 1, W + 1, 3) and table.dtype == np.int32
    for scale in (0.6, 0.6 * 0.709, 0.3, 0.17, 0.09, 1.37):
        size = (int(H * scale + 1), int(W * scale + 1))
        got = ac.area_resize(table, *size)
        assert got is not None and got.shape == (1, 3, *size) and got.flags.c_contiguous
        assert torch.equal(torch.from_numpy(got), F.interpolate(image, size=size, mode="area"))


def test_area_resize_leaves_to_pytorch_what_it_cannot_match(monkeypatch):
    """A 1x1 output (PyTorch takes a mean there) and bins too large for an exact float32 sum
    return None; the int64 table (large frames) gives the same values as the int32 one."""
    frame = np.full((400, 400, 3), 255, np.uint8)
    table = ac.integral_image(frame)
    assert ac.area_resize(table, 1, 1) is None
    assert ac.area_resize(table, 1, 2) is None  # 400 x 200-pixel bins of 255
    assert ac.area_resize(table, 4, 4) is not None
    monkeypatch.setattr(ac, "_INT32_MAX", 10)
    wide = ac.integral_image(frame[:50, :70])
    assert wide.dtype == np.int64
    image = torch.from_numpy(frame[:50, :70].copy()).unsqueeze(0).permute(0, 3, 1, 2).float()
    assert torch.equal(torch.from_numpy(ac.area_resize(wide, 21, 30)),
                       F.interpolate(image, size=(21, 30), mode="area"))
