"""Which face to keep when a frame has several: one track of the main face.

Policy (documented in the ``faces`` attrs as ``track_policy``):

1. **Continuity first.** If a face was kept on the previous frame, the candidate with the highest
   IoU with that box is kept, provided the IoU is at least ``min_iou`` (0.3). A talking head does
   not jump, so this keeps the same person even when someone larger walks past.
2. **Otherwise the main face**: the largest score of ``sqrt(area) / sqrt(frame area)`` times
   ``(1 − 0.5 · d)``, where ``d`` is the distance of the box centre from the frame centre divided
   by half the frame diagonal — big and central wins, size dominating.

Pure numpy, no state: the caller carries the previous box.
"""
from __future__ import annotations

import numpy as np

TRACK_POLICY = ("continuity: keep the candidate with max IoU (>= {min_iou}) with the previous kept box; "
                "else main face: max sqrt(area/frame_area) * (1 - 0.5 * centre_distance/half_diagonal)")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (N, 4) (or two single boxes); boxes are x0,y0,x1,y1."""
    a = np.asarray(a, np.float64)
    b = np.atleast_2d(np.asarray(b, np.float64))
    ix0 = np.maximum(a[0], b[:, 0])
    iy0 = np.maximum(a[1], b[:, 1])
    ix1 = np.minimum(a[2], b[:, 2])
    iy1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = max(0.0, (a[2] - a[0])) * max(0.0, (a[3] - a[1]))
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def main_face_scores(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Size-and-centrality score of each box (higher = more likely the subject)."""
    boxes = np.atleast_2d(np.asarray(boxes, np.float64))
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    size = np.sqrt(area / float(width * height))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    d = np.sqrt(cx ** 2 + cy ** 2) / (0.5 * np.hypot(width, height))
    return size * (1.0 - 0.5 * np.clip(d, 0, 1))


def choose_face(boxes: np.ndarray, prev_box: np.ndarray | None, width: int, height: int,
                min_iou: float = 0.3) -> int:
    """Index of the face to keep among ``boxes`` (N >= 1, 4). See the module docstring."""
    boxes = np.atleast_2d(np.asarray(boxes, np.float64))
    if len(boxes) == 1:
        return 0
    if prev_box is not None:
        ov = iou(prev_box, boxes)
        j = int(np.argmax(ov))
        if ov[j] >= min_iou:
            return j
    return int(np.argmax(main_face_scores(boxes, width, height)))
