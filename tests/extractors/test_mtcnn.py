"""The MTCNN cascade module: the pieces O-net tracking is built from."""
from __future__ import annotations

import numpy as np

from avpipe.extractors.mtcnn import move_inputs


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
