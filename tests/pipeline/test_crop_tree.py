"""``avpipe ingest-crops``: the organisers' cropped_aligned tree as a faces source."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.pipeline.crop_tree import CropTreeError, crops_result, find_folders
from avpipe.pipeline.store import Cache
from tests.media import make_clip

N = 20  # frames of each test video (2 s at 10 fps)


def _crop(value: int, size: int = 32, across: bool = False) -> np.ndarray:
    """Two flat halves (left/right, or top/bottom with ``across``): distinct edges per person."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = value
    img[:, size // 2:] = 255 - value
    return np.ascontiguousarray(img.transpose(1, 0, 2)) if across else img


def _folder(d: Path, frames, size: int = 32, value: int = 40, across: bool = False) -> None:
    import cv2

    d.mkdir(parents=True, exist_ok=True)
    for f in frames:
        cv2.imwrite(str(d / f"{f:05d}.jpg"), _crop(value + f, size, across))


@pytest.fixture
def tree(tmp_path):
    videos = tmp_path / "videos"
    make_clip(videos / "batch1" / "v1.mp4", seed=1, seconds=N / 10)
    make_clip(videos / "batch2" / "v2.mp4", seed=2, seconds=N / 10)
    crops = tmp_path / "cropped_aligned"
    _folder(crops / "v1", [f for f in range(1, N + 1) if f != 4])  # frame 4: no face
    _folder(crops / "v2_left", range(1, N + 1), value=10)
    _folder(crops / "v2_right", range(2, N + 1), value=200, across=True)
    return tmp_path, videos, crops


def _ingest(videos, crops, cache, *extra):
    return CliRunner().invoke(main, ["ingest-crops", "--crops", str(crops), "--videos", str(videos),
                                     "--cache", str(cache), "--backbone", "hog", *extra])


def _fingerprints(output: str) -> dict[str, str]:
    """The ``faces fingerprint X`` / ``visual fingerprint Y`` lines ingest-crops prints: reads pin them
    (a stage name alone means the stage's default config, which crops are not)."""
    return {ln.split()[0]: ln.split()[-1] for ln in output.splitlines() if " fingerprint " in ln}


def test_ingest_writes_faces_and_visual_entries_shaped_like_the_faces_stage(tree):
    root, videos, crops = tree
    r = _ingest(videos, crops, root / "cache")
    assert r.exit_code == 0, r.output
    assert "ingested 2 video(s), 0 failed" in r.output and "visual fingerprint" in r.output
    fps = _fingerprints(r.output)
    with Cache(root / "cache") as c:
        with pytest.raises(KeyError, match="a stage name never silently means another config"):
            c.read("faces", "batch1/v1.mp4")
        f1 = c.read("faces", "batch1/v1.mp4", fingerprint=fps["faces"])
        assert f1.data.shape == (N, 17) and f1.extra("crops").shape == (N, 32, 32, 3)
        assert f1.mask.tolist() == [True, True, True, False] + [True] * (N - 4)
        assert f1.attrs["missing_frames"] == {"None": 1} and f1.attrs["sides"] == {}
        f2 = c.read("faces", "batch2/v2.mp4", fingerprint=fps["faces"])
        assert f2.attrs["sides"] == {"left": 0, "right": 1}
        assert f2.extra("track_crops").shape == (2, N, 32, 32, 3)
        assert f2.extra("track_mask")[1].tolist() == [False] + [True] * (N - 1)
        # crop row i is file i+1: left person's frame 3 has value 13 on its left half (jpeg: ±3)
        assert abs(int(f2.extra("track_crops")[0, 2, 16, 4, 0]) - 13) <= 3
        v2 = c.read("visual", "batch2/v2.mp4", fingerprint=fps["visual"])
        assert v2.extra("track_data").shape == (2, N, 6084) and v2.attrs["sides"] == {"left": 0, "right": 1}
        assert not np.allclose(v2.extra("track_data")[0, 5], v2.extra("track_data")[1, 5])


def test_fingerprint_follows_the_crop_content(tree):
    root, videos, crops = tree
    fp = lambda out: [ln.split()[-1] for ln in out.splitlines() if ln.startswith("faces fingerprint")][0]  # noqa: E731
    a = fp(_ingest(videos, crops, root / "cache").output)
    assert fp(_ingest(videos, crops, root / "cache").output) == a  # same bytes, same fingerprint
    _folder(crops / "v1", [2], value=99)  # one crop changed
    b = fp(_ingest(videos, crops, root / "cache").output)
    assert b != a
    with Cache(root / "cache") as c:  # the old entries are still there
        assert {e.fingerprint for e in c.list(stage="faces")} == {a, b}


@pytest.mark.parametrize("damage,match", [
    (lambda c: __import__("shutil").rmtree(c / "v1"), "no crop folder v1/"),
    (lambda c: (c / "v1" / "notes.txt").write_text("x"), "notes.txt is not a crop image"),
    (lambda c: (c / "v1" / "00004.jpg").write_bytes(b"not a jpeg"), "does not decode as an image"),
    (lambda c: _folder(c / "v1", [4], size=40), "is 40x40, the other crops are 32x32"),
    (lambda c: _folder(c / "v1", [N + 1, N + 2]), f"frame {N + 1} but the video has {N} frames"),
    (lambda c: (c / "v1" / "00001.jpg").rename(c / "v1" / "1.jpg"), "1.jpg is not a crop image named NNNNN.jpg"),
    (lambda c: _folder(c / "v1", [0]), "1-based"),
    (lambda c: [p.unlink() for p in (c / "v1").glob("*.jpg") if int(p.stem) % 2 == 0], "has a file every 2 frames"),
])
def test_bad_crop_trees_fail_per_video_and_lose_nothing(tree, damage, match):
    root, videos, crops = tree
    cache = root / "cache"
    first = _ingest(videos, crops, cache)
    assert first.exit_code == 0
    fp = _fingerprints(first.output)["faces"]
    with Cache(cache) as c:
        before = {(e.fingerprint, e.content_id) for e in c.list(stage="faces")}
    damage(crops)
    r = _ingest(videos, crops, cache)
    assert r.exit_code == 1
    assert "FAILED batch1/v1.mp4" in r.output and match in r.output, r.output
    assert "ingested 1 video(s), 1 failed" in r.output  # the good video still goes in
    with Cache(cache) as c:
        after = {(e.fingerprint, e.content_id) for e in c.list(stage="faces")}
        assert before <= after
        assert c.read("faces", "batch1/v1.mp4", fingerprint=fp).data.shape == (N, 17)  # still readable


def test_two_layouts_for_one_video_is_an_error(tree):
    _, _, crops = tree
    _folder(crops / "v1_left", [1])
    with pytest.raises(CropTreeError, match="both v1/ and per-person folders"):
        find_folders(crops, "batch1/v1.mp4")


def test_crops_result_main_face_is_the_person_with_more_crops(tree):
    _, _, crops = tree
    res, _ = crops_result("v2", find_folders(crops, "batch2/v2.mp4"), N)
    assert res.attrs["main_face"] == "left" and res.mask.all()
    assert res.data[0, 15] == 1 and res.data[5, 15] == 2  # people with a crop on the frame


def test_help_has_an_example():
    r = CliRunner().invoke(main, ["ingest-crops", "--help"])
    assert r.exit_code == 0 and "avpipe ingest-crops --crops" in r.output


def test_chunked_ingest_writes_every_video(tree):
    from avpipe.pipeline.crop_tree import ingest_crop_tree

    root, videos, crops = tree
    rep = ingest_crop_tree(crops, videos, root / "cache", backbone=None, chunk=1, log=lambda m: None)
    assert rep.ingested == ["batch1/v1.mp4", "batch2/v2.mp4"] and not rep.failed and rep.visual_fingerprint is None
    with Cache(root / "cache") as c:
        assert len([e for e in c.list(stage="faces") if e.fingerprint == rep.faces_fingerprint]) == 2
