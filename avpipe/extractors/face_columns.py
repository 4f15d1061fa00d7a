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
def column_doc(onet_tracking: bool) -> str:
    """attrs["columns_doc"]: what each column holds; a tracked frame's row comes from the window
    cascade alone, or (O-net tracking) mostly from O-net on the last cascade's inputs, smoothed."""
    tracked = ("O-net alone on the last cascade's inputs moved with the face, smoothed over the "
               "neighbouring frames, or the cascade in a window around the previous box"
               if onet_tracking else "cascade in a window around the previous box")
    return ("box x0,y0,x1,y1 (frame pixels); 5 landmarks interleaved (x,y) in MTCNN order: left eye, "
            "right eye, nose, left mouth corner, right mouth corner (image left/right); prob = O-net "
            "face probability of the kept face; n_faces = faces MTCNN found (on tracked frames: at the "
            f"last key frame); detected = 1 if the full cascade ran on this frame, 0 if tracked ({tracked}). "
            "Masked rows (no face) are zero except n_faces/detected.")


#: The window cascade's column doc (``track_onet_inputs = 0``; what version 4 stored).
COLUMN_DOC = column_doc(False)

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
