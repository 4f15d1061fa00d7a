from __future__ import annotations

import os
import shutil
import unicodedata

import pytest

from avpipe.pipeline import discover as disc
from avpipe.pipeline.discover import content_hash, identify, iter_video_files, normalize_key


def test_keys_are_relative_posix_nfc_and_hidden_skipped(tmp_path, clip_bank):
    root = tmp_path / "v"
    nfd = unicodedata.normalize("NFD", "café.mp4")
    (root / "x" / ".hidden_dir").mkdir(parents=True)
    shutil.copy(clip_bank / "c0.mp4", root / "x" / nfd)
    shutil.copy(clip_bank / "c0.mp4", root / "x" / ".hidden.mp4")
    shutil.copy(clip_bank / "c0.mp4", root / "x" / ".hidden_dir" / "in.mp4")
    shutil.copy(clip_bank / "c1.mp4", root / "UPPER.MOV")
    (root / "notes.txt").write_text("not a video")
    keys = [f.key for f in iter_video_files(root)]
    assert keys == ["UPPER.MOV", unicodedata.normalize("NFC", "x/café.mp4")]
    assert normalize_key(os.path.join("a", nfd)) == unicodedata.normalize("NFC", "a/café.mp4")


def test_symlinked_folders_followed_once(tmp_path, clip_bank):
    root = tmp_path / "v"
    (root / "real").mkdir(parents=True)
    shutil.copy(clip_bank / "c0.mp4", root / "real" / "a.mp4")
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(clip_bank / "c1.mp4", outside / "b.mp4")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file_link.mp4").symlink_to(outside / "b.mp4")
    (root / "broken.mp4").symlink_to(tmp_path / "nope.mp4")
    keys = [f.key for f in iter_video_files(root)]
    assert keys == ["file_link.mp4", "link/b.mp4", "real/a.mp4"]


def test_single_file_and_missing_root(tmp_path, clip_bank):
    assert [f.key for f in iter_video_files(clip_bank / "c0.mp4")] == ["c0.mp4"]
    with pytest.raises(FileNotFoundError):
        list(iter_video_files(tmp_path / "missing"))


def test_content_id_is_of_bytes_and_memo_avoids_reading(tmp_path, clip_bank, monkeypatch):
    root = tmp_path / "v"
    (root / "one").mkdir(parents=True)
    (root / "two").mkdir()
    shutil.copy(clip_bank / "c0.mp4", root / "one" / "a.mp4")
    shutil.copy(clip_bank / "c0.mp4", root / "two" / "z.mp4")
    files = list(iter_video_files(root))
    vids = identify(files, {})
    assert vids[0].content_id == vids[1].content_id == content_hash(clip_bank / "c0.mp4")
    assert all(v.hashed for v in vids)
    memo = {f.memo_key: v.content_id for f, v in zip(files, vids)}
    monkeypatch.setattr(disc, "content_hash", lambda p: (_ for _ in ()).throw(AssertionError("read")))
    again = identify(files, memo)
    assert [v.content_id for v in again] == [v.content_id for v in vids]
    assert not any(v.hashed for v in again)


def test_output_path_for_never_escapes_the_root(tmp_path):
    from avpipe.pipeline.discover import output_path_for

    assert output_path_for(tmp_path, "a/b c/ü.mp4", ".csv") == tmp_path / "a" / "b c" / "ü.csv"
    assert output_path_for(tmp_path, "./x.mkv", ".txt") == tmp_path / "x.txt"
    for bad in ("../x.mp4", "a/../../x.mp4", "/etc/passwd", "", "C:/x.mp4"):
        with pytest.raises(ValueError):
            output_path_for(tmp_path, bad, ".csv")
