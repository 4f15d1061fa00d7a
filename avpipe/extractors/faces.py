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

Why not track with O-net alone (re-regressing the previous box): tried; its boxes come out ~5 %
smaller and ~1 px lower than the cascade's, and agreement with per-frame MTCNN (IoU >= 0.9) fell
to ~60–80 % of frames. The window cascade keeps the proposals that produce MTCNN's own boxes.

``key_interval=1, detect_max_side=None`` is the plain per-frame MTCNN.

Speed (``benchmarks/bench_faces.py``, 1 thread): besides the above, the nets are channels-last
(NCHW max-pooling is ~10× slower on CPU) and, on CPU, R-net/O-net are TorchScript-frozen with
oneDNN (``optimize_for_inference``); on tracked frames O-net on ~10 candidates is the main cost
left. Measured and rejected (agreement with per-frame MTCNN, IoU >= 0.9, fell below 95 %): only
the top-k R-net boxes to O-net (k=3: 83 %), top-k P-net proposals to R-net (k=10: 89 %), ``roi_max_face``
1.0 (92–94 %; 1.5: 96 %, too close to the bar), ``roi_min_face`` 0.7 (91 %).

Frames are decoded by streaming (PyAV, ``thread_type="AUTO"``, a small prefetch queue in a
background thread): memory is flat in video length except for the output rows and crops.
Rows follow *decode order = presentation order*; row ``i`` is the ``i``-th decoded frame. The row
count always equals the probe's ``n_frames``: if decoding yields fewer frames the missing tail is
masked (``attrs["decoded_frames"]`` says how many came out), extra decoded frames are dropped.

Several faces: one track of the main face (see :mod:`avpipe.extractors.tracking`); the number of
faces MTCNN found is recorded per row (on tracked frames: the count at the last key frame).
"""
from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from avpipe.extractors.alignment import TEMPLATES, align_face
from avpipe.extractors.tracking import TRACK_POLICY, choose_face, iou
from avpipe.extractors.weights import WeightSpec, file_checksum, register_weights
from avpipe.pipeline.config import Float, Int, config_dataclass
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
        import torch
        from facenet_pytorch.models.utils.detect_face import (
            batched_nms, batched_nms_numpy, bbreg, fixed_batch_process, imresample, pad, rerec)

        cfg = self.config
        H, W = frame.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        side = max(x1 - x0, y1 - y0, 1.0)
        half = 0.5 * cfg.roi_scale * side
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        rx0, ry0, rx1, ry1 = cx - half, cy - half, cx + half, cy + half
        empty = (np.zeros((0, 5)), np.zeros((0, 5, 2)))
        thr = cfg.thresholds
        dev = self.device
        src = torch.from_numpy(np.ascontiguousarray(frame)).to(dev)  # (H, W, 3) uint8, no copy on CPU

        def crop(ya: int, yb: int, xa: int, xb: int) -> Any:  # (1, 3, h, w) float, NCHW-contiguous
            # (area pooling of an NHWC-strided view takes a ~1.5x slower kernel; same values)
            return src[ya:yb, xa:xb].permute(2, 0, 1).contiguous().unsqueeze(0).float()

        with torch.inference_mode():
            cands = []
            for scale in self.pyramid(H, W):
                cell = 12.0 / scale
                if cell < cfg.roi_min_face * side:
                    continue
                if cfg.roi_max_face is not None and cell > cfg.roi_max_face * side:
                    continue
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
                level = torch.matmul(torch.matmul(my, crop(ya, yb, xa, xb)), mx.t())
                reg, probs = self.pnet((level - 127.5) * 0.0078125)
                cands.append(_proposals(reg, probs[:, 1], scale, thr[0], c0 // 2, r0 // 2, batched_nms))
            if not cands:
                return empty
            boxes = torch.cat(cands, 0)
            if len(boxes) == 0:
                return empty
            zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
            boxes = boxes[batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)]  # sorted by score
            if cfg.roi_rnet_top_k:
                boxes = boxes[:cfg.roi_rnet_top_k]
            regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                                 boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                                 boxes[:, 4]]).permute(1, 0)
            boxes = rerec(boxes)
            def stage_input(boxes: Any, side: int) -> tuple[Any, Any] | None:
                """Boxes that overlap the frame and their ``side``-px crops, normalised as MTCNN."""
                y, ey, x, ex = pad(boxes, W, H)
                keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
                if not keep:
                    return None
                data = torch.cat([imresample(crop(y[k] - 1, ey[k], x[k] - 1, ex[k]), (side, side))
                                  for k in keep])
                return boxes[keep], (data - 127.5) * 0.0078125

            # R-net
            got = stage_input(boxes, 24)
            if got is None:
                return empty
            boxes, data = got
            out = fixed_batch_process(data, self.rnet)
            score = out[1][:, 1]
            ok = score > thr[1]
            boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), 1)
            mv = out[0][ok]
            if len(boxes) == 0:
                return empty
            zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
            pick = batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)  # sorted by score
            if cfg.roi_onet_top_k:
                pick = pick[:cfg.roi_onet_top_k]
            boxes = rerec(bbreg(boxes[pick], mv[pick]))
            # O-net
            got = stage_input(boxes, 48)
            if got is None:
                return empty
            boxes, data = got
            out = fixed_batch_process(data, self.onet)
            score = out[2][:, 1]
            ok = score > thr[2]
            pts = out[1][ok].permute(1, 0)
            boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), 1)
            mv = out[0][ok]
            if len(boxes) == 0:
                return empty
            wi = boxes[:, 2] - boxes[:, 0] + 1
            hi = boxes[:, 3] - boxes[:, 1] + 1
            px = wi.repeat(5, 1) * pts[:5, :] + boxes[:, 0].repeat(5, 1) - 1
            py = hi.repeat(5, 1) * pts[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
            pts = torch.stack((px, py)).permute(2, 1, 0)
            boxes = bbreg(boxes, mv)
            zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
            pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], zeros, 0.7, "Min")
            boxes, pts = boxes[pick], pts[pick]
        return (boxes.cpu().numpy().astype(np.float64).reshape(-1, 5),
                pts.cpu().numpy().astype(np.float64).reshape(-1, 5, 2))


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


@register_stage
class Faces(Stage):
    name = "faces"
    version = "3"  # 2: window-only level resampling, roi_max_face, optimised nets; 3: key_interval 30
    config_cls = FacesConfig
    requires = ("probe",)
    per_frame = True
    videos_per_task = 4
    description = "MTCNN face box, 5 landmarks, probability and aligned crop per frame (main-face track)"

    config: FacesConfig

    def __init__(self, config: FacesConfig | None = None, runtime: Any = None) -> None:
        super().__init__(config, runtime)
        self.engine: MtcnnEngine | None = None

    def semantic_config(self) -> dict[str, Any]:
        d = super().semantic_config()
        d["thresholds"] = [float(x) for x in d["thresholds"]]
        return d

    def weights_id(self) -> str | None:
        return mtcnn_weights_id()

    def load(self) -> None:
        import torch

        if self.runtime.device == "auto" or self.runtime.resolve_device() == "cpu":
            torch.set_num_threads(max(1, int(self.runtime.num_threads)))
        self.engine = MtcnnEngine(self.config, self.runtime.resolve_device())

    # -- compute -------------------------------------------------------------------------------
    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        self.ensure_loaded()
        assert self.engine is not None
        probe = inputs["probe"]
        n = int(probe.attrs.get("n_frames", len(probe.data)))
        return self.process(iter_frames(video.path), n)

    def process(self, frames: Iterator[np.ndarray], n: int) -> StageResult:
        """Detect/track over a frame iterator and build exactly ``n`` rows (see module doc)."""
        self.ensure_loaded()
        eng, cfg = self.engine, self.config
        assert eng is not None
        S = cfg.crop_size
        data = np.zeros((n, len(COLUMNS)), np.float32)
        mask = np.zeros(n, bool)
        crops = np.zeros((n, S, S, 3), np.uint8)
        track: np.ndarray | None = None  # kept box of the previous frame
        last_count = 0
        since_key = 0
        decoded = 0
        shape: tuple[int, int] | None = None
        n_full = 0
        searching = False  # True while the last full cascade found no face

        def record(i: int, frame: np.ndarray, box: np.ndarray, lm: np.ndarray, prob: float,
                   count: int, detected: bool) -> None:
            data[i, :4] = box[:4]
            data[i, 4:14] = lm.reshape(-1)
            data[i, 14] = prob
            data[i, 15] = count
            data[i, 16] = float(detected)
            mask[i] = True
            crops[i] = align_face(frame, lm, S, cfg.template)

        def full(idx: list[int], fr: list[np.ndarray]) -> None:
            nonlocal track, last_count, since_key, n_full
            n_full += len(fr)
            for i, frame, (b, p) in zip(idx, fr, eng.detect(fr)):
                H, W = frame.shape[:2]
                last_count = len(b)
                since_key = 0
                if len(b) == 0:
                    data[i, 15], data[i, 16] = 0, 1
                    track = None
                    continue
                j = choose_face(b[:, :4], track, W, H, cfg.track_min_iou)
                box, lm, prob = b[j, :4], p[j], float(b[j, 4])
                if eng.scale_for(frame) != 1.0:  # found on a down-scaled copy: redo at full res
                    rb, rp_ = eng.detect_roi(frame, box)
                    if len(rb):
                        k = int(np.argmax(iou(box, rb[:, :4])))
                        box, lm, prob = rb[k, :4], rp_[k], float(rb[k, 4])
                record(i, frame, box, lm, prob, len(b), True)
                track = box

        pending_i: list[int] = []
        pending_f: list[np.ndarray] = []

        def flush() -> None:
            nonlocal searching
            if pending_f:
                full(list(pending_i), list(pending_f))
                pending_i.clear()
                pending_f.clear()
                searching = track is None

        for frame in frames:
            if decoded >= n:
                break  # more decoded frames than the probe counted: drop the extras
            i = decoded
            decoded += 1
            if shape is None:
                shape = frame.shape[:2]
            elif frame.shape[:2] != shape:  # resolution change mid-stream: no mixed batches
                flush()
                shape = frame.shape[:2]
            if track is None or since_key + 1 >= cfg.key_interval:
                if track is not None or not searching:  # key frame, or first frame: alone
                    flush()
                    full([i], [frame])
                    searching = track is None
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
            rb, rp_ = eng.detect_roi(frame, track)
            ov = iou(track, rb[:, :4]) if len(rb) else np.zeros(0)
            if len(rb) and ov.max() >= cfg.track_min_iou:
                k = int(np.argmax(ov))
                since_key += 1
                record(i, frame, rb[k, :4], rp_[k], float(rb[k, 4]), max(last_count, 1), False)
                track = rb[k, :4]
            else:  # lost (occlusion, cut): the full cascade on this frame at once
                track = None
                full([i], [frame])
        flush()
        attrs = {
            "columns": COLUMNS,
            "columns_doc": COLUMN_DOC,
            "crop_size": S,
            "template": cfg.template,
            "template_points": (TEMPLATES[cfg.template] * (S / 112.0)).round(4).tolist(),
            "alignment": "Umeyama similarity of the 5 MTCNN landmarks onto the template; "
                         "black outside the frame",
            "track_policy": TRACK_POLICY.format(min_iou=cfg.track_min_iou),
            "row_policy": "row i = i-th decoded frame (presentation order); rows beyond the decoded "
                          "frames are masked; decoded frames beyond n_frames are dropped",
            "n_frames": n,
            "decoded_frames": decoded,
            "full_detections": n_full,
            "faces_found": int(mask.sum()),
            "max_faces": int(data[:, 15].max()) if n else 0,
        }
        return StageResult(data=data, mask=mask, extras={"crops": crops}, attrs=attrs)
