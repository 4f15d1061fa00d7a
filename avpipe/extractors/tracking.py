"""Which face to keep when a frame has several: one track of the main face.

Policy (documented in the ``faces`` attrs as ``track_policy``):

1. **Continuity first.** If a face was kept on the previous frame, the candidate with the highest
   IoU with that box is kept, provided the IoU is at least ``min_iou`` (0.3). A talking head does
   not jump, so this keeps the same person even when someone larger walks past.
2. **Otherwise the main face**: the largest score of ``sqrt(area) / sqrt(frame area)`` times
   ``(1 − 0.5 · d)``, where ``d`` is the distance of the box centre from the frame centre divided
   by half the frame diagonal — big and central wins, size dominating.

Pure numpy, no state: the caller carries the previous box (the ``faces`` stage's caller is
:class:`avpipe.extractors.face_tracker.FaceTracker`).
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


# ----------------------------------------------------------------------------- person tracks
#: How the ``faces`` stage keeps one track per person (stored in attrs["person_track_policy"]).
PERSON_TRACK_POLICY = (
    "per person: on full-cascade frames detections are matched one-to-one to the tracks of the "
    "previous frame by IoU (greedy, >= {min_iou}); an unmatched detection takes the identity of a "
    "track lost at most {max_gap} frames ago whose last box is near (centre within 0.5 x its side, "
    "size ratio 0.67-1.5), else a new identity; between key frames every track follows its own "
    "box; tracks covering fewer than {min_frames} frames are dropped, at most {max_tracks} kept "
    "(longest first)")

#: How ``_left``/``_right`` labels bind to tracks (attrs["side_rule"]).
SIDE_RULE = ("the two tracks covering the most frames; 'left' is the one whose median box-centre x "
             "over the frames it covers is smaller (image left), 'right' the other; none with fewer "
             "than two tracks")


def match_tracks(prev: np.ndarray, dets: np.ndarray, min_iou: float) -> dict[int, int]:
    """One-to-one match of detections to previous track boxes: ``{det index: track index}``.

    Greedy on IoU, highest first, pairs below ``min_iou`` never match. ``prev`` (T, 4), ``dets``
    (N, 4). Greedy equals the optimal assignment whenever faces do not overlap, the only case
    where continuity is meaningful anyway.
    """
    prev = np.asarray(prev, np.float64).reshape(-1, 4)
    dets = np.asarray(dets, np.float64).reshape(-1, 4)
    if not len(prev) or not len(dets):
        return {}
    ov = np.stack([iou(p, dets) for p in prev])  # (T, N)
    out: dict[int, int] = {}
    used_t: set[int] = set()
    for flat in np.argsort(-ov, axis=None, kind="stable"):
        t, d = divmod(int(flat), ov.shape[1])
        if ov[t, d] < min_iou:
            break
        if t in used_t or d in out:
            continue
        out[d] = t
        used_t.add(t)
    return out


def reidentify(box: np.ndarray, lost: list[tuple[int, np.ndarray, int]], frame: int,
               max_gap: int) -> int | None:
    """Identity of a recently lost track that ``box`` continues, or None.

    ``lost`` holds (track id, last box, last frame index). Embedding-free: a person who
    reappears after a short gap (occlusion, a missed key frame) is where they were and about as
    big. Candidates lost more than ``max_gap`` frames ago are ignored; of those whose centre is
    within half the box side and whose size ratio is 0.67-1.5, the nearest wins.
    """
    b = np.asarray(box, np.float64)
    side = max(b[2] - b[0], b[3] - b[1], 1.0)
    c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    best, best_d = None, np.inf
    for tid, lb, last in lost:
        if frame - last > max_gap:
            continue
        lb = np.asarray(lb, np.float64)
        lside = max(lb[2] - lb[0], lb[3] - lb[1], 1.0)
        d = float(np.hypot(*(c - [(lb[0] + lb[2]) / 2, (lb[1] + lb[3]) / 2])))
        if d <= 0.5 * max(side, lside) and 0.67 <= side / lside <= 1.5 and d < best_d:
            best, best_d = tid, d
    return best


def bind_sides(tracks: dict[int, tuple[int, float]]) -> dict[str, int]:
    """``{"left": id, "right": id}`` for Aff-Wild2's ``_left``/``_right`` labels, or ``{}``.

    ``tracks`` maps track id -> (frames covered, median box-centre x). The rule (:data:`SIDE_RULE`):
    of the two tracks covering the most frames (ties: lower id), the one with the smaller median
    x is the left person. The median over the whole video keeps the binding when the two people
    cross briefly; ranking by coverage keeps a passer-by from taking a side.
    """
    ranked = sorted(tracks.items(), key=lambda kv: (-int(kv[1][0]), kv[0]))[:2]
    if len(ranked) < 2:
        return {}
    (a, (_, xa)), (b, (_, xb)) = ranked
    left, right = (a, b) if (xa, a) <= (xb, b) else (b, a)
    return {"left": int(left), "right": int(right)}
