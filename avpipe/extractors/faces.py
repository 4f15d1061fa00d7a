"""The ``faces`` stage: MTCNN boxes, 5 landmarks and aligned crops, one row per video frame.

Detector: facenet-pytorch's MTCNN (P/R/O-net weights ship inside the wheel, so it works offline;
``weights_id`` is a checksum of ``pnet.pt``/``rnet.pt``/``onet.pt``).

Why not one MTCNN call per frame: the P-net image pyramid dominates the cost (~50 ms for a
480×360 frame on one CPU core) while the face barely moves between frames. So, per video:

* **key frames** (every ``key_interval`` frames, and whenever no face is being tracked) get the
  full cascade, on a copy of the frame down-scaled so its longer side is at most
  ``detect_max_side`` (the minimum face size is scaled with it, never below P-net's 12 px);
* **frames in between** are *tracked*: the full cascade runs at full resolution, but only in a
  window of ``roi_scale`` × the previous face box around it, and only on the pyramid levels whose
  12-px P-net cell is ``roi_min_face``…``roi_max_face`` × the previous face size (3–4 levels
  instead of ~9); only that window of each level is resampled (same area bins as MTCNN's resize
  of the whole frame) — the face goes through the same P/R/O-net steps as in a full-frame
  detection, the P-net work is ~10× smaller. If no face overlapping the
  previous box (IoU >= ``track_min_iou``) is found there, the track is dropped and the frame gets
  the full-frame cascade at once;
* the kept face of a down-scaled key frame is re-detected the same way at full resolution, so
  down-scaling costs no box or landmark precision.

O-net tracking (``track_onet_inputs`` > 0, off by default): on a tracked frame O-net alone runs
on the O-net inputs of the last cascade that found this face (the square boxes R-net made for
it, best ``track_onet_inputs`` first), each moved by the scale and shift that take that
cascade's face box to the previous frame's; the window cascade runs instead (and becomes the new
anchor) when O-net's probability is below ``track_onet_min_prob`` or its face does not continue
the track. Feeding O-net its *inputs* rather than the previous *output* box matters: O-net's box
is not a fixed point of O-net (re-regressing the previous box shrank it ~5 % and agreement with
per-frame MTCNN fell to 60–80 %). With the inputs there is no drift or bias, and the stage runs ~3×
faster (``benchmarks/bench_faces.py``), but it no longer reproduces per-frame MTCNN's own
frame-to-frame jitter (its box against its own box on the next frame: IoU >= 0.9 on only
91–97 % of frames on the test clips): agreement with per-frame MTCNN (IoU >= 0.9) is 80–83 %,
landmarks ~1 % of the face width from per-frame MTCNN's (and as far from the true positions as
per-frame MTCNN's, within 6 %). The window cascade keeps the P-net
proposals that make MTCNN's own boxes, which is why it stays the default (and why O-net tracking
is off in the fingerprint when off: the output is version 4's).

``key_interval=1, detect_max_side=None`` is the plain per-frame MTCNN.

Speed (``benchmarks/bench_faces.py``, 1 thread): besides the above, the nets are channels-last
(NCHW max-pooling is ~10× slower on CPU) and, on CPU, R-net/O-net are TorchScript-frozen with
oneDNN (``optimize_for_inference``); on tracked frames O-net on ~10 candidates is the main cost
left. Measured and rejected (agreement with per-frame MTCNN, IoU >= 0.9, fell below 95 %): only
the top-k R-net boxes to O-net (k=3: 83 %), top-k P-net proposals to R-net (k=10: 89 %), ``roi_max_face``
1.0 (92–94 %; 1.5: 96 %, too close to the bar), ``roi_min_face`` 0.7 (91 %).

Frames are decoded by streaming (PyAV, ``thread_type="AUTO"``, a small prefetch queue in a
background thread). Memory is flat in video length: rows and crops go to the shard a chunk of
frames at a time (:meth:`Faces.stream`); person tracks keep small rows and landmarks, and their
crops are re-made from a second decode when they are written.
Rows follow *decode order = presentation order*; row ``i`` is the ``i``-th decoded frame. The row
count always equals the probe's ``n_frames``: if decoding yields fewer frames the missing tail is
masked (``attrs["decoded_frames"]`` says how many came out), extra decoded frames are dropped.

Several faces: ``data``/``mask``/``crops`` are the main-face view, one track of the main face
(see :mod:`avpipe.extractors.tracking`), so single-person corpora and their readers see what they
always saw; the number of faces MTCNN found is recorded per row (on tracked frames: the count at
the last key frame). Every person also gets a track of their own (same detections; between key
frames each track follows its own window, a person lost for up to ``track_max_gap`` frames keeps
their identity), stored as extras with a leading track axis:

A person who appears (or comes back) between key frames is picked up at the next key frame;
a secondary person lost between key frames does not trigger a full cascade (the main face does).

* ``track_ids`` (T,), ``track_data`` (T, n, 17) rows as ``data``, ``track_mask`` (T, n);
* ``track_crops`` (T, n, S, S, 3) only when T >= 2 (with one person the track *is* the main view);
* attrs ``tracks`` (per track: frames covered, first/last row, mean box, median centre x, side)
  and ``sides`` (``{"left": id, "right": id}`` by :func:`avpipe.extractors.tracking.bind_sides`),
  which is how Aff-Wild2's ``X_left``/``X_right`` labels find their person.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from avpipe.extractors.alignment import TEMPLATES, align_face
from avpipe.extractors.tracking import (PERSON_TRACK_POLICY, SIDE_RULE, TRACK_POLICY, bind_sides,
                                        choose_face, iou, match_tracks, reidentify)
from avpipe.extractors.weights import WeightSpec, file_checksum, register_weights
from avpipe.pipeline.config_schema import Float, Int, config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

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
MTCNN_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
# frames of ``track_crops`` written per block (T x 64 x 112 x 112 x 3 = 2.4 MB per track); non-semantic
TRACK_CROP_BLOCK = 64


def _mtcnn_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise StageError("facenet-pytorch is not installed; it provides the MTCNN face detector")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _locate_mtcnn() -> Path | None:
    try:
        d = _mtcnn_dir()
    except StageError:
        return None
    return d if all((d / f).exists() for f in MTCNN_FILES) else None


register_weights(WeightSpec(
    name="mtcnn", filename="mtcnn", source="package", package="facenet-pytorch",
    description="MTCNN P/R/O-net face detector (ships in the facenet-pytorch wheel, MIT)",
    how="pip install facenet-pytorch (the weights are inside the wheel)", locate=_locate_mtcnn))


def mtcnn_weights_id() -> str:
    """sha256 over the three MTCNN files' checksums (names included)."""
    d = _locate_mtcnn()
    if d is None:
        from avpipe.extractors.weights import resolve_weights

        d = resolve_weights("mtcnn")  # raises WeightsMissingError with the how-to
    h = hashlib.sha256()
    for f in MTCNN_FILES:
        h.update(f.encode() + b"\0" + file_checksum(d / f).encode() + b"\n")
    return h.hexdigest()


Template = Literal[tuple(TEMPLATES)]  # type: ignore[valid-type]  # the registered alignment templates
Probability = Annotated[Float, Field(ge=0.0, le=1.0)]


@config_dataclass
class FacesConfig:
    """Semantic options of the ``faces`` stage (all enter the fingerprint)."""

    crop_size: Annotated[Int, Field(ge=16, description="aligned crop side in pixels (112 ArcFace-style, "
                                                       "160 FaceNet-style)")] = 112
    template: Annotated[Template, Field(description="5-point alignment template (scaled by crop_size/112)")] = "arcface"
    min_face_size: Annotated[Int, Field(ge=1, description="smallest face searched, in original-frame pixels")] = 20
    thresholds: Annotated[tuple[Probability, Probability, Probability],
                          Field(description="P/R/O-net face probability thresholds (each in [0, 1])")] = (0.6, 0.7, 0.7)
    factor: Annotated[Float, Field(gt=0.0, lt=1.0, description="image-pyramid scale step")] = 0.709
    key_interval: Annotated[Int, Field(ge=1, description="full cascade every k frames; window-cascade tracking "
                                                         "between (1 = every frame)")] = 30
    detect_max_side: Annotated[Int | None, Field(ge=12, description="down-scale key frames to this longer side "
                                                                    "(unset = full resolution)")] = 640
    roi_scale: Annotated[Float, Field(ge=1.0, description="tracked frames: search window = roi_scale x the "
                                                          "previous face box")] = 2.0
    roi_min_face: Annotated[Float, Field(gt=0.0, description="tracked frames: pyramid levels for faces >= this x "
                                                             "the previous face")] = 0.5
    track_min_iou: Annotated[Probability, Field(description="continuity threshold (box IoU) of the track "
                                                            "policy")] = 0.3
    roi_max_face: Annotated[Float | None, Field(gt=0.0, description="tracked frames: only levels for faces <= "
                                                                    "this x the previous face (unset = no limit)")] = 2.0
    roi_rnet_top_k: Annotated[Int | None, Field(ge=1, description="tracked frames: best P-net proposals (after "
                                                                  "NMS) sent to R-net (unset = all)")] = None
    roi_onet_top_k: Annotated[Int | None, Field(ge=1, description="tracked frames: best R-net boxes (after NMS) "
                                                                  "sent to O-net (unset = all)")] = None
    track_max_gap: Annotated[Int, Field(ge=0, description="person tracks: a face lost at most this many frames "
                                                          "ago keeps its id")] = 75
    track_min_frames: Annotated[Int, Field(ge=1, description="person tracks: shorter tracks (spurious faces) are "
                                                             "not stored")] = 10
    max_tracks: Annotated[Int, Field(ge=1, description="person tracks: at most this many stored (longest "
                                                       "first)")] = 4
    track_onet_inputs: Annotated[Int, Field(ge=0, description="tracked frames: O-net alone on this many of the "
                                                              "last cascade's O-net inputs, moved with the face "
                                                              "(0 = window cascade on every tracked frame)")] = 0
    track_onet_min_prob: Annotated[Probability, Field(description="tracked frames: below this O-net probability "
                                                                  "the window cascade runs instead")] = 0.9

    @model_validator(mode="after")
    def _roi_range(self) -> "FacesConfig":
        if self.roi_max_face is not None and self.roi_max_face < self.roi_min_face:
            raise ValueError(f"roi_max_face ({self.roi_max_face}) must be >= roi_min_face ({self.roi_min_face})")
        return self



class MtcnnEngine:
    """MTCNN's three nets plus the two operations the stage needs: full cascade and window cascade."""

    def __init__(self, config: FacesConfig, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.config = config
        self.device = torch.device(device)
        # channels_last weights: conv outputs come out NHWC, where CPU max-pooling is ~10x faster
        # than NCHW (O-net/R-net ~2x faster overall; same maths, float rounding aside)
        cl = torch.channels_last
        self.pnet, self.rnet, self.onet = (
            PNet().to(self.device).eval().to(memory_format=cl),
            RNet().to(self.device).eval().to(memory_format=cl),
            ONet().to(self.device).eval().to(memory_format=cl))
        if self.device.type == "cpu":  # R/O-net: frozen, conv+PReLU through oneDNN (~1.5-2x more)
            self.rnet = _optimized(RNet().eval(), 24, self.rnet)
            self.onet = _optimized(ONet().eval(), 48, self.onet)

    def scale_for(self, frame: np.ndarray) -> float:
        """Down-scale factor of a key frame for the full cascade (1.0 = full resolution)."""
        side = max(frame.shape[:2])
        m = self.config.detect_max_side
        return m / float(side) if m and side > m else 1.0

    # -- full cascade --------------------------------------------------------------------------
    def detect(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Full cascade on same-size RGB frames (one batched call). Per frame: boxes (N, 5:
        x0,y0,x1,y1,prob) and landmarks (N, 5, 2), in original-frame pixels."""
        import cv2
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        if not frames:
            return []
        h, w = frames[0].shape[:2]
        cfg = self.config
        scale = self.scale_for(frames[0])
        if scale != 1.0:
            size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
            small = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        else:
            small = frames
        minsize = max(12.0, cfg.min_face_size * scale)
        if min(small[0].shape[:2]) < minsize:  # no pyramid level fits: no face can be found
            return [(np.zeros((0, 5)), np.zeros((0, 5, 2))) for _ in frames]
        batch = torch.from_numpy(np.stack(small))
        with torch.inference_mode():
            boxes, points = detect_face(batch, minsize, self.pnet, self.rnet, self.onet,
                                        list(cfg.thresholds), cfg.factor, self.device)
        out = []
        for b, p in zip(boxes, points):
            b = np.asarray(b, np.float64).reshape(-1, 5)
            p = np.asarray(p, np.float64).reshape(-1, 5, 2)
            if scale != 1.0:
                b[:, :4] /= scale
                p /= scale
            out.append((b, p))
        return out

    # -- region-of-interest cascade ------------------------------------------------------------
    def pyramid(self, h: int, w: int) -> list[float]:
        """MTCNN's scale list for a full-resolution frame (as facenet-pytorch builds it)."""
        m = 12.0 / self.config.min_face_size
        minl, s, out = min(h, w) * m, m, []
        while minl >= 12:
            out.append(s)
            s *= self.config.factor
            minl *= self.config.factor
        return out

    def detect_roi(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's cascade at full resolution, with P-net evaluated only near ``box``.

        Why this reproduces per-frame MTCNN: each pyramid level is MTCNN's area resize of the
        *whole* frame; here only the window of that level is computed (:func:`_area_matrix`: the
        same averaging bins as ``F.interpolate(mode="area")``, applied to the frame pixels those
        bins cover), then P-net (fully convolutional, overall stride 2) runs on it, the window
        starting at an even offset, so every P-net cell inside the window equals the full-frame
        cell; R-net and O-net crop from the full frame as usual. The face's proposals, hence its
        final box and landmarks, are MTCNN's own. Only levels whose 12-px window is at least
        ``roi_min_face`` (and at most ``roi_max_face``) × the previous face size are evaluated,
        only a window of ``roi_scale`` × the previous box around it, and optionally only the
        ``roi_rnet_top_k`` / ``roi_onet_top_k`` best candidates go on to R-net / O-net.
        Returns boxes (N, 5) and landmarks (N, 5, 2) in frame pixels.
        """
        c = self.roi_cascade(frame, box)
        return c.boxes[c.picks], c.points[c.picks]

    def roi_cascade(self, frame: np.ndarray, box: np.ndarray) -> "Cascade":
        """:meth:`detect_roi` with O-net's inputs and every candidate that passed O-net (what
        :meth:`onet_track` needs to follow the face on the next frames)."""
        import torch

        src = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)  # (H, W, 3) uint8
        with torch.inference_mode():
            boxes = self._roi_pnet(src, box)
            boxes = self._rnet_step(src, boxes) if boxes is not None else None
            got = self._onet_step(src, boxes) if boxes is not None else None
        return Cascade.of(got)

    def onet_track(self, frame: np.ndarray, inputs: np.ndarray) -> "Cascade":
        """O-net alone on given square input boxes (N, 4) in frame pixels: score, threshold,
        landmarks, regression and NMS exactly as the cascade's last step. Why this can stand in
        for the cascade on a tracked frame: the cascade's answer *is* O-net's output on the boxes
        R-net hands it; fed boxes placed on the face as R-net placed them on an earlier frame
        (see :meth:`FaceTracker.follow`), O-net sees the same kind of input and returns the
        same kind of box — without P-net and R-net."""
        import torch

        src = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        ib = torch.from_numpy(np.asarray(inputs, np.float32).reshape(-1, 4)).to(self.device)
        with torch.inference_mode():
            got = self._onet_step(src, torch.cat([ib, torch.zeros(len(ib), 1, device=self.device)], 1))
        return Cascade.of(got)

    def _roi_levels(self, H: int, W: int, side: float) -> list[float]:
        """The pyramid scales whose 12-px P-net cell is ``roi_min_face``..``roi_max_face`` x ``side``."""
        cfg = self.config
        out = []
        for scale in self.pyramid(H, W):
            cell = 12.0 / scale
            if cell < cfg.roi_min_face * side:
                continue
            if cfg.roi_max_face is not None and cell > cfg.roi_max_face * side:
                continue
            out.append(scale)
        return out

    def _roi_pnet(self, src: Any, box: np.ndarray) -> Any | None:
        """P-net on the window of each selected level, NMS across levels, box regression:
        R-net's candidates (N, 5) as MTCNN builds them, or None."""
        import torch
        from facenet_pytorch.models.utils.detect_face import batched_nms, rerec

        cfg, dev = self.config, self.device
        H, W = int(src.shape[0]), int(src.shape[1])
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        side = max(x1 - x0, y1 - y0, 1.0)
        half = 0.5 * cfg.roi_scale * side
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        rx0, ry0, rx1, ry1 = cx - half, cy - half, cx + half, cy + half
        cands = []
        for scale in self._roi_levels(H, W, side):
            hs, ws = int(H * scale + 1), int(W * scale + 1)
            # window in this level's pixels; even start keeps P-net's stride-2 grid aligned
            c0 = max(0, int(np.floor(rx0 * scale)) - 2) // 2 * 2
            r0 = max(0, int(np.floor(ry0 * scale)) - 2) // 2 * 2
            c1 = min(ws, int(np.ceil(rx1 * scale)) + 2)
            r1 = min(hs, int(np.ceil(ry1 * scale)) + 2)
            if c1 - c0 < 12 or r1 - r0 < 12:
                continue
            my, ya, yb = _area_matrix(H, hs, r0, r1)
            mx, xa, xb = _area_matrix(W, ws, c0, c1)
            my, mx = torch.from_numpy(my).to(dev), torch.from_numpy(mx).to(dev)
            level = torch.matmul(torch.matmul(my, _nchw(src, ya, yb, xa, xb)), mx.t())
            reg, probs = self.pnet((level - 127.5) * 0.0078125)
            cands.append(_proposals(reg, probs[:, 1], scale, cfg.thresholds[0], c0 // 2, r0 // 2,
                                    batched_nms))
        if not cands:
            return None
        boxes = torch.cat(cands, 0)
        if len(boxes) == 0:
            return None
        zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
        boxes = boxes[batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)]  # sorted by score
        if cfg.roi_rnet_top_k:
            boxes = boxes[:cfg.roi_rnet_top_k]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]]).permute(1, 0)
        return rerec(boxes)

    @staticmethod
    def _net_input(src: Any, boxes: Any, side: int) -> tuple[Any, Any] | None:
        """Boxes that overlap the frame and their ``side``-px crops, normalised as MTCNN (the
        input step shared by R-net and O-net); None if no box overlaps the frame."""
        import torch
        from facenet_pytorch.models.utils.detect_face import imresample, pad

        H, W = int(src.shape[0]), int(src.shape[1])
        y, ey, x, ex = pad(boxes, W, H)
        keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
        if not keep:
            return None
        data = torch.cat([imresample(_nchw(src, y[k] - 1, ey[k], x[k] - 1, ex[k]), (side, side))
                          for k in keep])
        return boxes[keep], (data - 127.5) * 0.0078125

    def _rnet_step(self, src: Any, boxes: Any) -> Any | None:
        """R-net: score, threshold, NMS 0.7, regression: O-net's candidates, or None."""
        import torch
        from facenet_pytorch.models.utils.detect_face import (
            batched_nms, bbreg, fixed_batch_process, rerec)

        got = self._net_input(src, boxes, 24)
        if got is None:
            return None
        boxes, data = got
        out = fixed_batch_process(data, self.rnet)
        score = out[1][:, 1]
        ok = score > self.config.thresholds[1]
        boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), 1)
        mv = out[0][ok]
        if len(boxes) == 0:
            return None
        zeros = torch.zeros(len(boxes), dtype=torch.long, device=self.device)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)  # sorted by score
        if self.config.roi_onet_top_k:
            pick = pick[:self.config.roi_onet_top_k]
        return rerec(bbreg(boxes[pick], mv[pick]))

    def _onet_step(self, src: Any, boxes: Any) -> tuple[Any, Any, Any, Any] | None:
        """O-net: score, threshold, landmarks, regression, NMS 0.7 ("Min"): (boxes, points,
        inputs, picks) — every candidate above the threshold, its O-net input box and the
        indices NMS keeps (MTCNN's answer is ``boxes[picks]``), or None."""
        import torch
        from facenet_pytorch.models.utils.detect_face import (
            batched_nms_numpy, bbreg, fixed_batch_process)

        got = self._net_input(src, boxes, 48)
        if got is None:
            return None
        boxes, data = got
        out = fixed_batch_process(data, self.onet)
        score = out[2][:, 1]
        ok = score > self.config.thresholds[2]
        inputs = boxes[ok, :4]
        pts = out[1][ok].permute(1, 0)
        boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), 1)
        mv = out[0][ok]
        if len(boxes) == 0:
            return None
        wi = boxes[:, 2] - boxes[:, 0] + 1
        hi = boxes[:, 3] - boxes[:, 1] + 1
        px = wi.repeat(5, 1) * pts[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        py = hi.repeat(5, 1) * pts[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        pts = torch.stack((px, py)).permute(2, 1, 0)
        boxes = bbreg(boxes, mv)
        zeros = torch.zeros(len(boxes), dtype=torch.long, device=self.device)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], zeros, 0.7, "Min")
        return boxes, pts, inputs, pick


@dataclass
class Cascade:
    """O-net's candidates on one frame, in frame pixels: ``boxes`` (N, 5: x0,y0,x1,y1,prob),
    ``points`` (N, 5, 2), the square O-net ``inputs`` (N, 4) they came from, and ``picks``, the
    indices MTCNN's final NMS keeps (its answer, best first)."""

    boxes: np.ndarray
    points: np.ndarray
    inputs: np.ndarray
    picks: np.ndarray

    @classmethod
    def of(cls, got: tuple[Any, Any, Any, Any] | None) -> "Cascade":
        if got is None:
            return cls(np.zeros((0, 5)), np.zeros((0, 5, 2)), np.zeros((0, 4)), np.zeros(0, np.int64))
        b, p, i, k = got
        return cls(b.cpu().numpy().astype(np.float64).reshape(-1, 5),
                   p.cpu().numpy().astype(np.float64).reshape(-1, 5, 2),
                   i.cpu().numpy().astype(np.float64).reshape(-1, 4),
                   np.asarray(k.cpu().numpy() if hasattr(k, "cpu") else k, np.int64).reshape(-1))


def _nchw(src: Any, ya: int, yb: int, xa: int, xb: int) -> Any:
    """(1, 3, h, w) float crop of an (H, W, 3) uint8 frame tensor, NCHW-contiguous (area pooling
    of an NHWC-strided view takes a ~1.5x slower kernel; same values)."""
    return src[ya:yb, xa:xb].permute(2, 0, 1).contiguous().unsqueeze(0).float()


def _optimized(net: Any, side: int, fallback: Any) -> Any:
    """``net`` traced, frozen and optimised for CPU inference (TorchScript's
    ``optimize_for_inference``: oneDNN convolutions, folded constants); ``fallback`` if this torch
    cannot do it. Outputs equal the eager net's up to float rounding (~1e-5 on probabilities)."""
    import copy
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            x = torch.zeros(4, 3, side, side)
            m = torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(net), x))
            ref, got = net(x), m(x)
            if all(torch.allclose(a, b, atol=1e-3) for a, b in zip(ref, got)):
                return m
    except Exception:  # noqa: BLE001 - any failure: keep the eager net
        pass
    return fallback


def _area_matrix(n_in: int, n_out: int, o0: int, o1: int) -> tuple[np.ndarray, int, int]:
    """Rows ``o0:o1`` of the area-resize (``F.interpolate(mode="area")`` = adaptive average
    pooling) from ``n_in`` to ``n_out`` samples as a matrix over the input span they cover.

    Output ``i`` averages inputs ``floor(i*n_in/n_out)`` to ``ceil((i+1)*n_in/n_out)`` (exclusive),
    PyTorch's bins. Returns (matrix (o1-o0, i1-i0) float32, i0, i1).
    """
    i = np.arange(o0, o1, dtype=np.int64)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    i0, i1 = int(start[0]), int(end[-1])
    idx = np.arange(i0, i1, dtype=np.int64)
    m = (idx >= start[:, None]) & (idx < end[:, None])
    return (m / (end - start)[:, None]).astype(np.float32), i0, i1


def _proposals(reg: Any, probs: Any, scale: float, thresh: float, off_x: int, off_y: int,
               batched_nms: Any) -> Any:
    """P-net cells above ``thresh`` as boxes in frame pixels (MTCNN's generateBoundingBox, with
    the window's cell offset added before the floor so coordinates match the full-frame ones),
    then MTCNN's per-level NMS at 0.5."""
    import torch

    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= thresh
    inds = mask.nonzero()
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = inds[:, 1:].type(reg.dtype).flip(1)
    bb = bb + torch.tensor([off_x, off_y], dtype=reg.dtype, device=bb.device)
    q1 = ((2 * bb + 1) / scale).floor()
    q2 = ((2 * bb + 12) / scale).floor()
    boxes = torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1)
    zeros = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    return boxes[batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.5)]


def _anchor(c: Cascade, k: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """What O-net tracking keeps of a cascade whose answer is candidate ``k``: that box and the
    O-net inputs of the (at most ``n``, best first) candidates that landed on the same face —
    the inputs R-net made for it, which :func:`_move` carries along with the face."""
    if n <= 0:
        return None
    box = c.boxes[k, :4]
    same = np.flatnonzero(iou(box, c.boxes[:, :4]) >= 0.5)
    same = same[np.argsort(-c.boxes[same, 4], kind="stable")][:n]
    return box.copy(), c.inputs[same].copy()


def _move(inputs: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``inputs`` (N, 4) moved by the similarity (scale, shift) that takes box ``src`` to ``dst``:
    they keep the place relative to the face that R-net gave them."""
    s = ((dst[2] - dst[0]) + (dst[3] - dst[1])) / max(1e-6, (src[2] - src[0]) + (src[3] - src[1]))
    cs = np.array([(src[0] + src[2]) / 2, (src[1] + src[3]) / 2])
    cd = np.array([(dst[0] + dst[2]) / 2, (dst[1] + dst[3]) / 2])
    out = np.empty_like(inputs)
    out[:, :2] = cd + s * (inputs[:, :2] - cs)
    out[:, 2:] = cd + s * (inputs[:, 2:] - cs)
    return out


def iter_frames(path: str | Path, prefetch: int = 8) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) uint8 in presentation order, decoded by streaming.

    A background thread decodes ahead (bounded queue of ``prefetch`` frames) so decoding
    overlaps detection; FFmpeg's own frame/slice threads are on (``thread_type="AUTO"``).
    """
    import av

    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            with av.open(str(path)) as c:
                vs = c.streams.video[0]
                vs.thread_type = "AUTO"
                for fr in c.decode(vs):
                    if stop.is_set():
                        break
                    q.put(fr.to_ndarray(format="rgb24"))
        except Exception as e:  # surfaced in the consumer
            q.put(e)
        finally:
            q.put(done)

    th = threading.Thread(target=work, daemon=True, name="avpipe-decode")
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(timeout=0.05)


@dataclass
class _Track:
    """One person's track while a video is processed."""

    id: int
    box: np.ndarray  # box on the last frame it was seen
    last: int  # that frame's index
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> data row (len(COLUMNS),)
    lms: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (5, 2) float64 landmarks of the crop
    # last cascade that found this face: its box there and the O-net inputs that produced it
    anchor: tuple[np.ndarray, np.ndarray] | None = None


class FaceTracker:
    """Per-video state of the ``faces`` stage: every person's track plus the main-face view.

    The main-face rows (``data``/``mask``/``crops``) follow the policy of
    :mod:`avpipe.extractors.tracking` exactly as a single-track stage would; every face found is
    also kept in its person track (:data:`~avpipe.extractors.tracking.PERSON_TRACK_POLICY`).

    Memory: main-face rows wait here only until :meth:`take` hands them on (a chunk of frames at a
    time); person tracks keep their small rows and landmarks, not their crops — those are made
    again from the landmarks when the track crops are written (:meth:`Faces.stream`), unless
    ``keep_crops`` (a one-shot frame iterator cannot be decoded twice): then every track crop
    is kept (tests, benchmarks on short clips).
    """

    def __init__(self, engine: MtcnnEngine, config: FacesConfig, n: int, keep_crops: bool = False) -> None:
        self.eng, self.cfg, self.n = engine, config, n
        self.rows: dict[int, np.ndarray] = {}  # frame -> main-face view row, until taken
        self.crops: dict[int, np.ndarray] = {}  # frame -> main-face crop (its row is valid), until taken
        self.kept: dict[tuple[int, int], np.ndarray] | None = {} if keep_crops else None  # (track, row) -> crop
        self.faces_found = 0
        self.max_faces = 0
        self.tracks: dict[int, _Track] = {}
        self.active: list[int] = []  # tracks followed from the previous frame, main first
        self.main: int | None = None
        self.last_count = 0
        self.since_key = 0
        self.n_full = 0
        self.decoded = 0  # frames decoded so far (set by Faces._detect)

    @property
    def main_box(self) -> np.ndarray | None:
        return None if self.main is None else self.tracks[self.main].box

    # -- recording ---------------------------------------------------------------------------
    def _record(self, i: int, frame: np.ndarray, tid: int, box: np.ndarray, lm: np.ndarray,
                prob: float, count: int, detected: bool) -> None:
        row = np.zeros(len(COLUMNS), np.float32)
        row[:4], row[4:14], row[14], row[15], row[16] = box[:4], lm.reshape(-1), prob, count, detected
        lm = np.array(lm, np.float64).reshape(5, 2)
        crop = align_face(frame, lm, self.cfg.crop_size, self.cfg.template)
        if tid == self.main:
            self.rows[i], self.crops[i] = row, crop
        if self.kept is not None:
            self.kept[(tid, i)] = crop
        t = self.tracks[tid]
        t.rows[i], t.lms[i], t.box, t.last = row, lm, np.asarray(box[:4], np.float64), i

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The main-face columns of rows ``start:stop`` (all final), released from the tracker."""
        S = self.cfg.crop_size
        data = np.zeros((stop - start, len(COLUMNS)), np.float32)
        mask = np.zeros(stop - start, bool)
        crops = np.zeros((stop - start, S, S, 3), np.uint8)
        for i in range(start, stop):
            row = self.rows.pop(i, None)
            if row is not None:
                data[i - start] = row
            crop = self.crops.pop(i, None)
            if crop is not None:
                mask[i - start], crops[i - start] = True, crop
        self.faces_found += int(mask.sum())
        if len(data):
            self.max_faces = max(self.max_faces, int(data[:, 15].max()))
        return {"data": data, "mask": mask, "crops": crops}

    # -- full cascade ------------------------------------------------------------------------
    def full(self, idx: list[int], frames: list[np.ndarray]) -> None:
        """Full cascade on a batch of same-size frames, then :meth:`_key_frame` on each."""
        self.n_full += len(frames)
        for i, frame, (b, p) in zip(idx, frames, self.eng.detect(frames)):
            self._key_frame(i, frame, b, p)

    def _identities(self, i: int, boxes: np.ndarray) -> list[int]:
        """A track id per detection: continuity, else a recently lost identity, else a new one."""
        cfg = self.cfg
        matched = match_tracks(np.array([self.tracks[t].box for t in self.active]).reshape(-1, 4),
                               boxes, cfg.track_min_iou)
        ids: list[int | None] = [self.active[matched[d]] if d in matched else None
                                 for d in range(len(boxes))]
        for d in range(len(boxes)):
            if ids[d] is not None:
                continue
            lost = [(t.id, t.box, t.last) for t in self.tracks.values() if t.id not in ids]
            rid = reidentify(boxes[d], lost, i, cfg.track_max_gap)
            if rid is None:
                rid = len(self.tracks)
                self.tracks[rid] = _Track(rid, np.asarray(boxes[d], np.float64), i)
            ids[d] = rid
        return [int(x) for x in ids]  # type: ignore[arg-type]

    def _key_frame(self, i: int, frame: np.ndarray, b: np.ndarray, p: np.ndarray) -> None:
        H, W = frame.shape[:2]
        self.last_count, self.since_key = len(b), 0
        if len(b) == 0:
            row = np.zeros(len(COLUMNS), np.float32)
            row[15], row[16] = 0, 1
            self.rows[i] = row
            self.active, self.main = [], None
            return
        j = choose_face(b[:, :4], self.main_box, W, H, self.cfg.track_min_iou)
        ids = self._identities(i, b[:, :4])
        self.main = ids[j]
        order = [j] + [k for k in range(len(b)) if k != j]
        self.active = [ids[k] for k in order]
        refine = self.eng.scale_for(frame) != 1.0
        for k in order:
            box, lm, prob = b[k, :4], p[k], float(b[k, 4])
            self.tracks[ids[k]].anchor = None  # the batched full cascade keeps no O-net inputs
            if refine:  # found on a down-scaled copy: redo at full resolution
                got = self._window(frame, ids[k], box, 0.0)
                if got is not None:
                    box, lm, prob, _ = got
            self._record(i, frame, ids[k], box, lm, prob, len(b), True)

    # -- one face on one frame -----------------------------------------------------------------
    def _window(self, frame: np.ndarray, tid: int, box: np.ndarray,
                min_iou: float) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """Window cascade around ``box``: the found face overlapping it most (box, landmarks,
        prob, IoU), if that IoU >= ``min_iou``; the track's O-net anchor is set from it."""
        c = self.eng.roi_cascade(frame, box)
        if not len(c.picks):
            return None
        ov = iou(box, c.boxes[c.picks, :4])
        m = int(np.argmax(ov))
        if ov[m] < min_iou:
            return None
        k = int(c.picks[m])
        self.tracks[tid].anchor = _anchor(c, k, self.cfg.track_onet_inputs)
        return c.boxes[k, :4], c.points[k], float(c.boxes[k, 4]), float(ov[m])

    def _onet(self, frame: np.ndarray, tid: int) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """O-net alone on the track's anchor inputs, moved with the face (see :meth:`follow`);
        None when it has no anchor or O-net is unsure (prob < ``track_onet_min_prob``) or the
        face it returns does not continue the track."""
        t = self.tracks[tid]
        if t.anchor is None or not self.cfg.track_onet_inputs:
            return None
        a_box, a_inputs = t.anchor
        c = self.eng.onet_track(frame, _move(a_inputs, a_box, t.box))
        if not len(c.picks):
            return None
        ov = iou(t.box, c.boxes[c.picks, :4])
        m = int(np.argmax(ov))
        k = int(c.picks[m])
        if ov[m] < self.cfg.track_min_iou or c.boxes[k, 4] < self.cfg.track_onet_min_prob:
            return None
        return c.boxes[k, :4], c.points[k], float(c.boxes[k, 4]), float(ov[m])

    # -- tracked frames ----------------------------------------------------------------------
    def follow(self, i: int, frame: np.ndarray) -> bool:
        """Window cascade around every active track's box. False (nothing recorded) when the
        main face is lost: the caller then runs the full cascade on this frame."""
        cfg = self.cfg
        found: dict[int, tuple[np.ndarray, np.ndarray, float, float]] = {}
        for tid in self.active:
            got = self._onet(frame, tid)
            if got is None:
                got = self._window(frame, tid, self.tracks[tid].box, cfg.track_min_iou)
            if got is not None:
                found[tid] = got
        # two tracks landed on one face (people crossing): the better-overlapping one keeps it
        for a in list(found):
            for c in list(found):
                if a < c and a in found and c in found and iou(found[a][0], found[c][0]) >= 0.5:
                    del found[a if found[a][3] < found[c][3] else c]
        if self.main not in found:
            self.main = None
            return False
        self.since_key += 1
        self.active = [t for t in self.active if t in found]
        for tid in self.active:
            box, lm, prob, _ = found[tid]
            self._record(i, frame, tid, box, lm, prob, max(self.last_count, 1), False)
        return True

    # -- result ------------------------------------------------------------------------------
    def person_tracks(self) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], dict[str, int], list[_Track]]:
        """(extras but ``track_crops``, per-track summary, sides, the tracks kept) (see
        PERSON_TRACK_POLICY)."""
        cfg, n = self.cfg, self.n
        kept = sorted((t for t in self.tracks.values() if len(t.rows) >= cfg.track_min_frames),
                      key=lambda t: (-len(t.rows), t.id))[:cfg.max_tracks]
        kept.sort(key=lambda t: t.id)
        T = len(kept)
        tdata = np.zeros((T, n, len(COLUMNS)), np.float32)
        tmask = np.zeros((T, n), bool)
        summary = []
        for r, t in enumerate(kept):
            rows = np.array(sorted(t.rows))
            tdata[r, rows] = np.stack([t.rows[i] for i in rows])
            tmask[r, rows] = True
            boxes = tdata[r, rows, :4].astype(np.float64)
            summary.append({"id": t.id, "frames": int(len(rows)), "first": int(rows[0]),
                            "last": int(rows[-1]), "mean_box": boxes.mean(0).round(1).tolist(),
                            "median_cx": round(float(np.median((boxes[:, 0] + boxes[:, 2]) / 2)), 2)})
        sides = bind_sides({s["id"]: (s["frames"], s["median_cx"]) for s in summary})
        for s in summary:
            s["side"] = next((k for k, v in sides.items() if v == s["id"]), None)
        extras = {"track_ids": np.array([t.id for t in kept], np.int64), "track_data": tdata,
                  "track_mask": tmask}
        return extras, summary, sides, kept


@register_stage
class Faces(Stage):
    name = "faces"
    # 2: window-only level resampling, roi_max_face, optimised nets; 3: key_interval 30;
    # 4: one track per person (extras track_*, attrs tracks/sides) beside the main-face rows
    version = "4"
    config_cls = FacesConfig
    requires = ("probe",)
    per_frame = True
    videos_per_task = 4
    description = ("MTCNN face box, 5 landmarks, probability and aligned crop per frame (main face; "
                   "every person's track as extras)")

    config: FacesConfig

    def __init__(self, config: FacesConfig | None = None, runtime: Any = None) -> None:
        super().__init__(config, runtime)
        self.engine: MtcnnEngine | None = None

    def semantic_config(self) -> dict[str, Any]:
        d = super().semantic_config()
        d["thresholds"] = [float(x) for x in d["thresholds"]]
        if not d["track_onet_inputs"]:  # O-net tracking off: the output is version 4's, so is the key
            del d["track_onet_inputs"], d["track_onet_min_prob"]
        return d

    def weights_id(self) -> str | None:
        return mtcnn_weights_id()

    def load(self) -> None:
        self.engine = MtcnnEngine(self.config, self.runtime.resolve_device())

    # -- compute -------------------------------------------------------------------------------
    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        self.ensure_loaded()
        assert self.engine is not None
        probe = inputs["probe"]
        n = int(probe.attrs.get("n_frames", len(probe.data)))
        return self.stream(lambda: iter_frames(video.path), n)

    def process(self, frames: Iterator[np.ndarray], n: int) -> StageResult:
        """Detect/track over a frame iterator and build exactly ``n`` rows (see module doc), as
        whole arrays (tests, benchmarks: every track crop is kept, as the iterator is one-shot)."""
        from avpipe.pipeline.chunks import dense

        return dense(self.stream(lambda: frames, n, again=False))

    def stream(self, frames: Callable[[], Iterator[np.ndarray]], n: int, *, again: bool = True) -> StageResult:
        """The result with its per-frame columns (``data``, ``mask``, ``crops``) as a
        :class:`~avpipe.pipeline.chunks.RowChunks`: detection runs as the writer pulls the
        chunks, and each chunk is handed on once its frames are final. Person tracks are decided
        over the whole video, so their extras (and the counts in attrs) are filled in when the
        last chunk has been yielded; ``track_crops`` is a
        :class:`~avpipe.pipeline.chunks.BlockArray` that, with ``again``, decodes ``frames()`` a
        second time and re-aligns each kept track's crops from the landmarks it recorded
        (``align_face`` is deterministic: the same crops as the first pass made) — so no crop of
        a track has to wait in memory until the tracks are known."""
        from avpipe.pipeline.chunks import CHUNK_FRAMES, RowChunks

        self.ensure_loaded()
        S = self.config.crop_size
        attrs = self._attrs(n)
        extras: dict[str, Any] = {}

        def chunks() -> Iterator[dict[str, np.ndarray]]:
            assert self.engine is not None
            tr = FaceTracker(self.engine, self.config, n, keep_crops=not again)
            done = 0
            it = self._detect(tr, frames(), n)
            for final in it:
                while final - done >= CHUNK_FRAMES:
                    yield tr.take(done, done + CHUNK_FRAMES)
                    done += CHUNK_FRAMES
            while done < n:  # the rest, and rows beyond the decoded frames (masked zeros)
                stop = min(n, done + CHUNK_FRAMES)
                yield tr.take(done, stop)
                done = stop
            ex, summary, sides, kept = tr.person_tracks()
            if len(kept) >= 2:  # one person: its track is the main-face view, no second copy of the crops
                ex["track_crops"] = self._track_crops(tr, kept, frames if again else None)
            extras.clear()
            extras.update(ex)
            attrs.update({"tracks": summary, "sides": sides, "decoded_frames": tr.decoded,
                          "full_detections": tr.n_full, "faces_found": tr.faces_found,
                          "max_faces": tr.max_faces if n else 0})

        rows = RowChunks(n, (len(COLUMNS),), np.float32, chunks,
                         columns={"mask": ((), bool), "crops": ((S, S, 3), np.uint8)})
        return StageResult(data=rows, mask=None, extras=extras, attrs=attrs)

    def _track_crops(self, tr: FaceTracker, kept: list[_Track],
                     frames: Callable[[], Iterator[np.ndarray]] | None) -> Any:
        """``track_crops`` (T, n, S, S, 3) written a block of frames at a time: from the frames
        decoded again (``frames``), or from the crops the tracker kept."""
        from avpipe.pipeline.chunks import BlockArray, chunk_ranges

        cfg, n, S = self.config, tr.n, self.config.crop_size
        T, decoded = len(kept), tr.decoded

        def blocks() -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
            it = iter(frames()) if frames is not None else None
            try:
                for a, b in chunk_ranges(n, TRACK_CROP_BLOCK):
                    blk = np.zeros((T, b - a, S, S, 3), np.uint8)
                    for i in range(a, b):
                        frame = next(it, None) if it is not None and i < decoded else None
                        if it is not None and i < decoded and frame is None:
                            raise StageError(f"the video decoded to {i} frames the second time, "
                                             f"{decoded} the first")
                        for r, t in enumerate(kept):
                            if i not in t.rows:
                                continue
                            if frame is None:
                                assert tr.kept is not None
                                blk[r, i - a] = tr.kept[(t.id, i)]
                            else:
                                blk[r, i - a] = align_face(frame, t.lms[i], S, cfg.template)
                    yield (slice(None), slice(a, b)), blk
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()

        return BlockArray((T, n, S, S, 3), np.uint8, blocks, row_axis=1)

    def _detect(self, tr: FaceTracker, frames: Iterator[np.ndarray], n: int) -> Iterator[int]:
        """Run detection/tracking over ``frames`` (at most ``n``); yields, as it goes, how many
        leading frames are final (their rows will not change); sets ``tr.decoded``."""
        eng, cfg = self.engine, self.config
        assert eng is not None
        pending_i: list[int] = []  # faceless stretch: frames batched for one full-cascade call
        pending_f: list[np.ndarray] = []
        decoded = 0
        shape: tuple[int, int] | None = None
        searching = False  # True while the last full cascade found no face

        def flush() -> None:
            nonlocal searching
            if pending_f:
                tr.full(list(pending_i), list(pending_f))
                pending_i.clear()
                pending_f.clear()
                searching = tr.main is None

        for frame in frames:
            if decoded >= n:
                break  # more decoded frames than the probe counted: drop the extras
            i = decoded
            decoded += 1
            tr.decoded = decoded
            yield pending_i[0] if pending_i else i  # every frame before this one is final
            if shape is None:
                shape = frame.shape[:2]
            elif frame.shape[:2] != shape:  # resolution change mid-stream: no mixed batches
                flush()
                shape = frame.shape[:2]
            if tr.main is None or tr.since_key + 1 >= cfg.key_interval:
                if tr.main is not None or not searching:  # key frame, or first frame: alone
                    flush()
                    tr.full([i], [frame])
                    searching = tr.main is None
                    continue
                # The last full cascade found no face: batch it over the next frames (up to a
                # key interval) — faceless stretches cost one batched call per k frames.
                pending_i.append(i)
                pending_f.append(frame)
                if len(pending_f) >= cfg.key_interval:
                    flush()
                continue
            if pending_f:  # cannot happen while tracking, kept for safety
                flush()
            if not tr.follow(i, frame):  # lost (occlusion, cut): the full cascade at once
                tr.full([i], [frame])
        flush()
        tr.decoded = decoded
        yield decoded

    def _attrs(self, n: int) -> dict[str, Any]:
        """The stage's attrs; what is known only at the end of the video (tracks, sides, counts)
        is filled in by :meth:`stream` after the last chunk (same keys, same order as ever)."""
        cfg, S = self.config, self.config.crop_size
        return {
            "columns": COLUMNS,
            "columns_doc": COLUMN_DOC,
            "crop_size": S,
            "template": cfg.template,
            "template_points": (TEMPLATES[cfg.template] * (S / 112.0)).round(4).tolist(),
            "alignment": "Umeyama similarity of the 5 MTCNN landmarks onto the template; "
                         "black outside the frame",
            "track_policy": TRACK_POLICY.format(min_iou=cfg.track_min_iou),
            "person_track_policy": PERSON_TRACK_POLICY.format(
                min_iou=cfg.track_min_iou, max_gap=cfg.track_max_gap, min_frames=cfg.track_min_frames,
                max_tracks=cfg.max_tracks),
            "tracks": [],
            "sides": {},
            "side_rule": SIDE_RULE,
            "row_policy": "row i = i-th decoded frame (presentation order); rows beyond the decoded "
                          "frames are masked; decoded frames beyond n_frames are dropped",
            "n_frames": n,
            "decoded_frames": 0,
            "full_detections": 0,
            "faces_found": 0,
            "max_faces": 0,
        }
