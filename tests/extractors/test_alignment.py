"""Alignment and track-policy maths (no video)."""
from __future__ import annotations

import numpy as np

from avpipe.extractors.alignment import ARCFACE_112, align_face, alignment_matrix, template, transform_points, umeyama
from avpipe.extractors.tracking import choose_face, iou


def test_umeyama_recovers_a_similarity():
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = ARCFACE_112
    dst = src @ (s * r).T + t
    m = umeyama(src, dst)
    np.testing.assert_allclose(m[:, :2], s * r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_template_scales_with_size_and_landmarks_land_on_it():
    np.testing.assert_allclose(template(224), ARCFACE_112 * 2)
    lm = ARCFACE_112 * 2.3 + [100, 40]  # a face 2.3x larger, shifted
    m = alignment_matrix(lm, 160)
    np.testing.assert_allclose(transform_points(m, lm), template(160), atol=1e-6)
    frame = np.zeros((400, 500, 3), np.uint8)
    crop = align_face(frame, lm, 160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8


def test_track_policy_continuity_then_main_face():
    big_corner = [0, 0, 200, 200]
    small_centre = [280, 200, 360, 280]
    boxes = np.array([big_corner, small_centre], float)
    # no previous face: size dominates
    assert choose_face(boxes, None, 640, 480) == 0
    # continuity keeps the previously tracked face even if smaller
    assert choose_face(boxes, np.array([285, 205, 362, 283.0]), 640, 480) == 1
    # a previous box overlapping nothing: back to the main face
    assert choose_face(boxes, np.array([600, 440, 639, 479.0]), 640, 480) == 0
    assert iou(np.array([0, 0, 10, 10.0]), np.array([[0, 0, 10, 10.0]]))[0] == 1.0
