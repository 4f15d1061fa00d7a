"""Face alignment: a similarity transform of 5 landmarks onto a fixed template.

Why a template and a *similarity* (rotation + uniform scale + translation, 4 degrees of freedom):
every embedding backbone downstream sees the face in the same place and orientation without
shearing it, so backbones can be swapped later without re-detecting (the crops are cached).

The template is the ArcFace / InsightFace 5-point template for 112×112 crops (left eye, right eye,
nose tip, left mouth corner, right mouth corner, in *image* left/right — the same order MTCNN
returns). For another crop size ``S`` it is scaled by ``S / 112``. The fit is Umeyama's
closed-form least squares (deterministic, no RANSAC), done in numpy.
"""
from __future__ import annotations

import numpy as np

#: ArcFace 5-point template for a 112×112 crop: (x, y) of left eye, right eye, nose, mouth corners.
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

TEMPLATES = {"arcface": ARCFACE_112}


def template(size: int, name: str = "arcface") -> np.ndarray:
    """The 5-point template for a ``size``×``size`` crop (the 112 template scaled by size/112)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown alignment template {name!r}; known: {', '.join(TEMPLATES)}")
    if size < 16:
        raise ValueError(f"crop size {size} is too small (minimum 16)")
    return TEMPLATES[name] * (size / 112.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 similarity matrix M minimising ||M·[src,1] − dst||² (Umeyama 1991, no reflection)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    r = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, 2) points."""
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def alignment_matrix(landmarks: np.ndarray, size: int, name: str = "arcface") -> np.ndarray:
    """The similarity taking ``landmarks`` (5, 2) in the frame onto the template for ``size``."""
    return umeyama(np.asarray(landmarks, np.float64).reshape(5, 2), template(size, name))


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int = 112,
               name: str = "arcface") -> np.ndarray:
    """The aligned ``size``×``size``×3 uint8 crop of the face with these 5 landmarks.

    Pixels outside the frame are black (a face at the border stays geometrically correct rather
    than being stretched to fill the crop).
    """
    import cv2

    m = alignment_matrix(landmarks, size, name)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
