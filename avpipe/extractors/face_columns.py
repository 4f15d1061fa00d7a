"""The columns of a ``faces`` data row: one detected face on one frame.

Why a module of its own: the stage writes these rows, the tracker builds them and ``render`` and
the crop-tree ingest read them; each imports the layout from here rather than from the stage
(which would pull in the detector and make the tracker and the stage import each other).
"""
from __future__ import annotations

import numpy as np

#: Columns of the ``data`` rows (also stored in attrs["columns"]).
COLUMNS = (["x0", "y0", "x1", "y1"]
           + [f"{axis}{i}" for i in range(5) for axis in ("lm_x", "lm_y")]
           + ["prob", "n_faces", "detected"])
COLUMN_DOC = ("box x0,y0,x1,y1 (frame pixels); 5 landmarks interleaved (x,y) in MTCNN order: left eye, "
              "right eye, nose, left mouth corner, right mouth corner (image left/right); prob = O-net "
              "face probability of the kept face; n_faces = faces MTCNN found (on tracked frames: at the "
              "last key frame); detected = 1 if the full cascade ran on this frame, 0 if tracked "
              "(cascade in a window around the previous box). "
              "Masked rows (no face) are zero except n_faces/detected.")

# Named positions in a row, derived from COLUMNS (readers index rows with these, never numbers).
N_COLUMNS = len(COLUMNS)
BOX = slice(COLUMNS.index("x0"), COLUMNS.index("y1") + 1)  # x0, y0, x1, y1
LANDMARKS = slice(COLUMNS.index("lm_x0"), COLUMNS.index("lm_y4") + 1)  # (x, y) per point, MTCNN order
PROB = COLUMNS.index("prob")
N_FACES = COLUMNS.index("n_faces")
DETECTED = COLUMNS.index("detected")


def landmarks(row: np.ndarray) -> np.ndarray:
    """The 5 landmarks of one row as (5, 2) (x, y), in the row's dtype."""
    return np.asarray(row)[..., LANDMARKS].reshape(*np.shape(row)[:-1], 5, 2)
