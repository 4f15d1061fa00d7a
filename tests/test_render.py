"""``avpipe render``: the drawn boxes are where the cache says, masked frames shown as such."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.cli import main
from tests.conftest import MEDIA

CLIPS = ("two_faces_tone.mp4", "no_face_no_audio.mp4")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """faces + logmel of the two clips, extracted from one folder (the 'other machine')."""
    from avpipe.pipeline.runner import run_extract
    from avpipe.pipeline.stage import Runtime

    root = tmp_path_factory.mktemp("render")
    built = root / "built_here"
    built.mkdir()
    for c in CLIPS:
        shutil.copy(MEDIA / c, built / c)
    s = run_extract(root / "cache", built, stages=["faces", "logmel"], progress=False,
                    runtime=Runtime(device="cpu", num_threads=1))
    assert s.ok, s.render()
    moved = root / "elsewhere"  # the videos now live in another folder
    shutil.move(str(built), str(moved))
    return root / "cache", moved


def _render(cache_dir, videos, key, out, *extra):
    r = CliRunner().invoke(main, ["render", key, "--cache", str(cache_dir), "--videos", str(videos), "--out", str(out),
                                  *extra], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    sheet = cv2.imread(str(out / (key.rsplit(".", 1)[0] + "_sheet.png")))[..., ::-1]
    layout = json.loads((out / (key.rsplit(".", 1)[0] + "_sheet.json")).read_text())
    return sheet, layout


def _faces(cache_dir, key):
    from avpipe.pipeline.store import Cache

    with Cache(cache_dir) as c:
        e = c.read("faces", key)
        return np.asarray(e.data), np.asarray(e.mask), int(c.read("probe", key).attrs["width"]), \
            int(c.read("probe", key).attrs["height"])


def _tile(sheet, t, w, h):
    s = t["scale"]
    return sheet[t["y"]:t["y"] + int(round(h * s)), t["x"]:t["x"] + int(round(w * s))]


def test_two_person_clip_boxes_are_the_cached_boxes(cache, tmp_path):
    from avpipe.render import BOX_DETECTED, BOX_TRACKED, box_pixels

    cache_dir, videos = cache
    data, mask, w, h = _faces(cache_dir, "two_faces_tone.mp4")
    assert mask.all() and data[:, 15].max() == 2  # two faces seen, one track kept
    sheet, layout = _render(cache_dir, videos, "two_faces_tone.mp4", tmp_path)
    assert len(layout["tiles"]) == 8
    for t in layout["tiles"]:
        tile = _tile(sheet, t, w, h)
        row = data[t["frame"]]
        color = np.array(BOX_DETECTED if row[16] >= 0.5 else BOX_TRACKED)
        x0, y0, x1, y1 = box_pixels(row, t["scale"])
        xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
        for y, x in ((y0, xm), (y1, xm), (ym, x0), (ym, x1)):  # the four edges, at the cached coordinates
            assert (tile[y, x] == color).all(), (t, (y, x), tile[y, x])
        for y, x in ((y0 - 4, xm), (y1 + 4, xm), (ym, x0 - 4), (ym, x1 + 4)):  # and not 4 px outside
            assert not (tile[y, x] == color).all()
        # every pixel of either box colour lies on this box's outline: no box on the other person
        hit = np.argwhere(np.all(tile == np.array(BOX_DETECTED), -1) | np.all(tile == np.array(BOX_TRACKED), -1))
        on_edge = ((np.abs(hit[:, 0] - y0) <= 1) | (np.abs(hit[:, 0] - y1) <= 1)) & (hit[:, 1] >= x0 - 1) & (hit[:, 1] <= x1 + 1) \
            | ((np.abs(hit[:, 1] - x0) <= 1) | (np.abs(hit[:, 1] - x1) <= 1)) & (hit[:, 0] >= y0 - 1) & (hit[:, 0] <= y1 + 1)
        assert len(hit) > 2 * (x1 - x0) and on_edge.all()
    import av

    with av.open(str(tmp_path / "two_faces_tone.mp4")) as c:  # the annotated video: one frame per cached row
        assert sum(1 for _ in c.decode(video=0)) == len(data)


def test_no_face_clip_is_shown_masked_without_boxes(cache, tmp_path):
    from avpipe.render import BOX_DETECTED, BOX_TRACKED, MASKED

    cache_dir, videos = cache
    data, mask, w, h = _faces(cache_dir, "no_face_no_audio.mp4")
    assert not mask.any()
    sheet, layout = _render(cache_dir, videos, "no_face_no_audio.mp4", tmp_path / "o", "--no-mp4")
    assert layout["tiles"] and all(t["masked"] for t in layout["tiles"])
    for t in layout["tiles"]:
        tile = _tile(sheet, t, w, h)
        assert not (np.all(tile == np.array(BOX_DETECTED), -1) | np.all(tile == np.array(BOX_TRACKED), -1)).any()
        for y, x in ((1, tile.shape[1] // 2), (tile.shape[0] // 2, 1), (tile.shape[0] - 2, 5)):
            assert (tile[y, x] == np.array(MASKED)).all()
    assert not (tmp_path / "o" / "no_face_no_audio.mp4").exists()


def test_render_by_path_and_errors(cache, tmp_path):
    cache_dir, videos = cache
    r = CliRunner().invoke(main, ["render", str(videos / "two_faces_tone.mp4"), "--cache", str(cache_dir),
                                  "--out", str(tmp_path), "--no-mp4", "--frames", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "two_faces_tone_sheet.png").is_file()
    r = CliRunner().invoke(main, ["render", "nope.mp4", "--cache", str(cache_dir), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown video 'nope.mp4'" in r.output
    r = CliRunner().invoke(main, ["render", "two_faces_tone.mp4", "--cache", str(cache_dir), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "not found" in r.output and "--videos" in r.output


def test_every_persons_track_is_drawn_where_the_entry_says():
    """A faces entry with one track per person (extras track_*): each box at its own coordinates."""
    from avpipe.pipeline.entry import MemoryEntry
    from avpipe.pipeline.stage import StageResult
    from avpipe.render import BOX_DETECTED, TRACK_COLORS, CachedVideo, box_pixels, draw_frame, person_tracks

    n = 3
    main = np.zeros((n, 17), np.float32)
    main[:, :4] = [60, 50, 140, 150]
    main[:, 4:14] = np.tile([80, 90, 120, 90, 100, 110, 85, 130, 115, 130], (n, 1))
    main[:, 14:17] = [0.99, 2, 1]
    other = main.copy()
    other[:, :4] = [300, 80, 360, 160]
    other[:, 4:14] = main[:, 4:14] + [240, 20] * 5
    tdata = np.stack([main, other])
    tmask = np.ones((2, n), bool)
    tmask[1, 2] = False  # the second person leaves on the last frame
    res = StageResult(data=main, mask=np.ones(n, bool),
                      extras={"track_ids": np.array([4, 7]), "track_data": tdata, "track_mask": tmask},
                      attrs={"sides": {"left": 4, "right": 7}})
    tracks = person_tracks(MemoryEntry(res, stage="faces"))
    assert [t[0] for t in tracks] == ["T4 left", "T7 right"]
    cv = CachedVideo(key="x", content_id="0", path=None, times=np.arange(n) / 25.0, fps=25.0, size=(480, 360),
                     faces=main, face_mask=np.ones(n, bool), tracks=tracks)
    frame = np.full((360, 480, 3), 90, np.uint8)
    for i, expect_other in ((0, True), (2, False)):
        tile, s = draw_frame(frame, cv, i, 320)
        for row, color, present in ((main[i], BOX_DETECTED, True), (other[i], TRACK_COLORS[1], expect_other)):
            x0, y0, x1, y1 = box_pixels(row, s)
            xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
            for y, x in ((y0, xm), (y1, xm), (ym, x0), (ym, x1)):
                assert (tile[y, x] == np.array(color)).all() == present, (i, color, (y, x), tile[y, x])


def test_run_traces_are_the_runs_predictions_and_labels(cache, tmp_path):
    """--run: the predicted trace is what `avpipe predict` writes for the video, the labelled one the labels."""
    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.predict import predict_videos
    from avpipe.fusion.source import CacheSource
    from avpipe.fusion.train import train
    from avpipe.render import attach_run, load_cached

    cache_dir, videos = cache
    lines = ["video,frame,valence,arousal,split"]
    for v, n, split in (("two_faces_tone", 50, "train"), ("no_face_no_audio", 38, "val")):
        lines += [f"{v},{i},{0.5 * np.sin(i / 7):.3f},{0.3 * np.cos(i / 5):.3f},{split}" for i in range(n)]
    (tmp_path / "va.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    train(TrainConfig(fusion="audio", labels=str(tmp_path / "va.csv"), cache=str(cache_dir), out=str(run),
                      features={"audio": "logmel"}, window=16, hop=8, batch_size=4, epochs=1, device="cpu",
                      num_threads=1, model={"hidden": 8}), log=lambda m: None)
    cv = load_cached(cache_dir, "two_faces_tone.mp4", videos)
    attach_run(cv, run, cache_dir)
    f = predict_videos(run, videos, tmp_path / "pred", source=CacheSource(cache_dir), keys=["two_faces_tone.mp4"],
                       extract=False, device="cpu", log=lambda m: None)[0]
    import csv

    expect = np.array([[float(r["valence"]), float(r["arousal"])] for r in csv.DictReader(f.open())])
    assert cv.va_pred.shape == (50, 2) and np.allclose(cv.va_pred, expect, atol=1e-5)
    assert np.allclose(cv.va_label[:, 0], [0.5 * np.sin(i / 7) for i in range(50)], atol=1e-3)
    r = CliRunner().invoke(main, ["render", "two_faces_tone.mp4", "--cache", str(cache_dir), "--videos", str(videos),
                                  "--run", str(run), "--out", str(tmp_path / "r"), "--no-mp4", "--frames", "2"])
    assert r.exit_code == 0, r.output
    with_run = cv2.imread(str(tmp_path / "r" / "two_faces_tone_sheet.png"))
    _render(cache_dir, videos, "two_faces_tone.mp4", tmp_path / "plain", "--no-mp4", "--frames", "2")
    assert with_run.shape[0] > cv2.imread(str(tmp_path / "plain" / "two_faces_tone_sheet.png")).shape[0]


def test_render_by_key_finds_the_file_where_extract_saw_it(cache, tmp_path):
    """`avpipe render KEY --cache C` on the machine that built C needs no --videos."""
    cache_dir, videos = cache
    where_extract_saw_it = cache_dir.parent / "built_here"
    where_extract_saw_it.mkdir()
    try:
        shutil.copy(videos / "two_faces_tone.mp4", where_extract_saw_it / "two_faces_tone.mp4")
        r = CliRunner().invoke(main, ["render", "two_faces_tone.mp4", "--cache", str(cache_dir),
                                      "--out", str(tmp_path), "--no-mp4", "--frames", "1"])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "two_faces_tone_sheet.png").is_file()
    finally:
        shutil.rmtree(where_extract_saw_it)
