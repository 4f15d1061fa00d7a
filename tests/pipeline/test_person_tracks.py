"""The per-person storage layout: what a stage writes through it is what a reader gets back."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline import person_tracks as pt
from avpipe.pipeline.types import StageResult

REPO = Path(__file__).resolve().parents[2]


def test_stored_names_are_the_ones_existing_caches_hold():
    """Caches written before this module read back only if the names never change."""
    assert (pt.TRACK_IDS, pt.TRACK_DATA, pt.TRACK_MASK, pt.TRACK_CROPS) == \
        ("track_ids", "track_data", "track_mask", "track_crops")
    assert (pt.TRACKS_ATTR, pt.SIDES_ATTR) == ("tracks", "sides")


def test_track_extras_have_the_stored_dtypes_and_do_not_alias():
    mask = np.array([[1, 0, 1], [0, 1, 1]])
    data = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    ex = pt.track_extras([7, 9], data, mask)
    assert list(ex) == ["track_ids", "track_data", "track_mask"]
    assert ex["track_ids"].dtype == np.int64 and ex["track_ids"].tolist() == [7, 9]
    assert ex["track_mask"].dtype == np.bool_ and ex["track_data"] is data
    mask[0, 1] = 1  # the caller keeps working on its array
    assert not ex["track_mask"][0, 1]


def test_written_entry_reads_back_per_person(tmp_path):
    import h5py

    from avpipe.pipeline.entry import ShardEntry
    from avpipe.pipeline.shard import write_result

    n = 5
    data = np.random.default_rng(0).normal(size=(2, n, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]], bool)
    attrs = pt.person_attrs([{"id": 3, "frames": 4}, {"id": 8, "frames": 3}], {"left": 8, "right": 3})
    res = StageResult(data=np.zeros((n, 3), np.float32), mask=np.ones(n, bool),
                      extras=pt.track_extras([3, 8], data, mask), attrs=attrs)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        write_result(h5, "v", res, {})
    e = ShardEntry(tmp_path / "s.h5", stage="faces", fingerprint="f", content_id="v")
    assert pt.is_person_aware(e.attrs) and pt.has_tracks(e.extras)
    got = pt.read_tracks(e.extras, e.extra, e.attrs)
    assert got is not None and got.ids == [3, 8] and got.sides == {"left": 8, "right": 3}
    np.testing.assert_array_equal(got.data, data)
    np.testing.assert_array_equal(got.mask, mask)
    assert got.side_of(8) == "left" and got.side_of(3) == "right" and got.side_of(5) is None
    rows, m = pt.read_track(e.extra, 1)
    np.testing.assert_array_equal(rows, data[1])
    assert m.dtype == np.bool_ and m.tolist() == mask[1].tolist()
    assert pt.read_track_ids(e.extra) == [3, 8]


def test_entries_without_tracks_or_ids():
    def extra_of(d):
        return d.__getitem__

    assert pt.read_tracks({}, extra_of({}), {}) is None
    assert pt.read_track_ids(extra_of({})) == []  # a video without faces stores no tracks
    old = {"track_data": np.zeros((2, 4, 1), np.float32), "track_mask": np.ones((2, 4), bool)}
    got = pt.read_tracks(old, extra_of(old), {})
    assert got is not None and got.ids == [0, 1] and got.sides == {}  # numbered by position
    assert not pt.is_person_aware({"tracks": []}) and pt.is_person_aware({"sides": {}})


def test_copied_attrs_keep_the_upstream_people():
    up = {"tracks": [{"id": 0}], "sides": {"left": 0, "right": 1}, "other": 1}
    got = pt.copied_person_attrs(up)
    assert got == {"tracks": [{"id": 0}], "sides": {"left": 0, "right": 1}}
    got["sides"]["left"] = 5
    assert up["sides"]["left"] == 0
    assert pt.copied_person_attrs({}) == {"tracks": [], "sides": {}}


def test_importing_the_layout_pulls_in_neither_torch_nor_extractors_nor_fusion():
    """fusion reads per-person rows through this module; it must not drag the extractors in."""
    code = ("import sys, avpipe.pipeline.person_tracks; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('avpipe.extractors', "
            "'avpipe.fusion'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["avpipe.fusion.persons", "avpipe.render", "avpipe.extractors.visual",
                                    "avpipe.extractors.faces",
                                    "avpipe.extractors.crop_tree", "avpipe.extractors.face_tracker",
                                    "avpipe.data", "avpipe.fusion.source", "avpipe.fusion.predictor",
                                    "avpipe.cli.inspect"])
def test_every_per_person_reader_and_writer_spells_no_name_itself(module):
    """One schema: the places that write or read per-person outputs name them only through it
    (a string literal equal to a stored name, docstrings aside, is a second spelling)."""
    import ast
    import importlib
    import inspect

    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    names = {pt.TRACK_IDS, pt.TRACK_DATA, pt.TRACK_MASK, pt.TRACK_CROPS, pt.TRACKS_ATTR, pt.SIDES_ATTR}
    spelled = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs
                      and n.value in names})
    assert spelled == [], f"{module} spells {spelled}"
