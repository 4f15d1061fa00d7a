"""Red-team replays (issue 19) for crop trees: an absurd image and a link loop fail one video,
checked before decoding."""
from __future__ import annotations

import os

import numpy as np
import pytest

from avpipe.pipeline.store import Cache
from tests.extractors.test_crop_tree import N, _fingerprints, _ingest, tree  # noqa: F401 - fixture


def _fake_jpeg(path, w, h):
    """SOI, an APP0 segment, then a baseline frame header declaring w x h, then junk."""
    sof = b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + h.to_bytes(2, "big") + w.to_bytes(2, "big") + b"\x03" + b"\x00" * 9
    path.write_bytes(b"\xff\xd8" + b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\x00" + b"\x00" * 9 + sof + b"\x00" * 64)


def test_header_size_reads_jpeg_and_png_without_decoding(tmp_path):
    import cv2

    from avpipe.extractors.crop_tree import header_size

    img = np.zeros((37, 53, 3), np.uint8)
    for ext in ("jpg", "png"):
        cv2.imwrite(str(tmp_path / f"a.{ext}"), img)
        assert header_size(tmp_path / f"a.{ext}") == (53, 37)
    _fake_jpeg(tmp_path / "big.jpg", 20000, 20000)
    assert header_size(tmp_path / "big.jpg") == (20000, 20000)
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    assert header_size(tmp_path / "x.jpg") is None


@pytest.mark.parametrize("damage,match", [
    (lambda c: _fake_jpeg(c / "v1" / "00004.jpg", 20000, 20000), "is 20000x20000 (from its header)"),
    (lambda c: ((c / "v1" / "00005.jpg").unlink(), os.symlink("00005.jpg", c / "v1" / "00005.jpg")),
     "00005.jpg is named like a crop but is a symlink loop"),
])
def test_absurd_crop_or_loop_fails_that_video_only(tree, damage, match):  # noqa: F811
    root, videos, crops = tree
    cache = root / "cache"
    first = _ingest(videos, crops, cache)
    assert first.exit_code == 0, first.output
    fp = _fingerprints(first.output)["faces"]
    damage(crops)
    r = _ingest(videos, crops, cache)
    assert r.exit_code == 1
    assert "FAILED batch1/v1.mp4" in r.output and match in r.output, r.output
    assert "MemoryError" not in r.output and "ingested 1 video(s), 1 failed" in r.output
    with Cache(cache) as c:
        assert c.read("faces", "batch1/v1.mp4", fingerprint=fp).data.shape == (N, 17)


def test_non_utf8_video_and_crop_folder_names_are_ingested(tmp_path):
    from tests.extractors.test_crop_tree import _folder
    from tests.media import make_clip

    videos, crops = tmp_path / "videos", tmp_path / "crops"
    make_clip(videos / "good.mp4", seed=1, seconds=N / 10)
    make_clip(videos / "x.mp4", seed=2, seconds=N / 10)
    _folder(crops / "good", range(1, N + 1))
    _folder(crops / "x", range(1, N + 1))
    try:
        os.rename(videos / "x.mp4", os.path.join(os.fsencode(videos), b"caf\xe9.mp4"))
        os.rename(crops / "x", os.path.join(os.fsencode(crops), b"caf\xe9"))
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    r = _ingest(videos, crops, tmp_path / "cache")
    assert r.exit_code == 0 and "ingested 2 video(s), 0 failed" in r.output, r.output
    fp = _fingerprints(r.output)["faces"]
    with Cache(tmp_path / "cache") as c:
        assert c.read("faces", "caf\\xe9.mp4", fingerprint=fp).data.shape == (N, 17)
