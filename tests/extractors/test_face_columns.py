"""The faces row layout: named positions agree with the stored column names."""
from __future__ import annotations

import numpy as np

from avpipe.extractors import face_columns as fc


def test_named_positions_are_the_columns_of_that_name():
    cols = np.array(fc.COLUMNS)
    assert cols[fc.BOX].tolist() == ["x0", "y0", "x1", "y1"]
    assert cols[fc.LANDMARKS].tolist() == [f"{a}{i}" for i in range(5) for a in ("lm_x", "lm_y")]
    assert (cols[fc.PROB], cols[fc.N_FACES], cols[fc.DETECTED]) == ("prob", "n_faces", "detected")
    assert fc.N_COLUMNS == len(fc.COLUMNS) == 17  # stored rows: changing this changes every cache


def test_landmarks_of_one_row_and_of_many():
    row = np.zeros(fc.N_COLUMNS, np.float32)
    pts = np.arange(10, dtype=np.float32).reshape(5, 2) + 100
    row[fc.LANDMARKS] = pts.reshape(-1)
    np.testing.assert_array_equal(fc.landmarks(row), pts)
    rows = np.stack([row, row * 2])
    got = fc.landmarks(rows)
    assert got.shape == (2, 5, 2) and got.dtype == np.float32
    np.testing.assert_array_equal(got[1], pts * 2)
