"""MTCNN's cascade as the ``faces`` stage runs it: the full cascade, the window cascade and O-net alone.

facenet-pytorch's MTCNN (P/R/O-net weights ship inside the wheel, so it works offline; the weights
are registered here as ``mtcnn``, their id is a checksum of ``pnet.pt``/``rnet.pt``/``onet.pt``).
:class:`MtcnnEngine` re-implements the cascade's steps so that a tracked frame can run P-net on a
window of the pyramid levels only, or O-net alone (the module doc of
:mod:`avpipe.extractors.faces` says when the stage uses which).

Speed (figures in BENCHMARKS.md, "Where the faces time goes"; ``benchmarks/bench_faces.py``): the
nets are channels-last (CPU max-pooling is much slower on NCHW) and, on CPU, R-net/O-net are
TorchScript-frozen with oneDNN (``optimize_for_inference``); on tracked frames O-net on ~10
candidates is the main cost left. Around the nets, every step of the window cascade and of O-net
tracking returns what it returned before bit for bit (the stored rows do not change, so neither
does the stage's version) with less per-call overhead, which is most of what the small steps cost:

* R-net/O-net inputs: on CPU every candidate's 24/48-px crop comes from one batched call
  (:func:`avpipe.extractors.area_crops.area_crops`: one integral image, exact integer bin sums,
  divided as PyTorch's area pooling divides) instead of one ``imresample`` per box;
* P-net on the window levels is traced and frozen without ``optimize_for_inference`` (whose
  oneDNN kernels round differently and gained nothing on window-sized inputs): the same kernels
  without per-layer Python calls, kept only if equal to the eager net bit for bit;
* the window levels' area matrices are cached (a tracked face moves a few pixels, its windows
  repeat), and every level reads one float copy of the frame region they all cover;
  single-class NMS calls torchvision's ``nms`` directly (what ``batched_nms`` with one class
  reduces to below its size switch);
* after O-net, MTCNN's arithmetic on the few candidates (landmarks, box regression, the final
  "Min" NMS) runs in NumPy float32, the same operations in the same order as facenet-pytorch's
  torch code, without a tensor dispatch per operation.

The key frame's full cascade (:meth:`MtcnnEngine.detect_one`) is ``detect_face``'s arithmetic on
the stage's own steps — the pyramid's area resizes read off one integral image
(:func:`avpipe.extractors.area_crops.area_resize`), the frozen P-net, R-net's ~100 crops spread
over the frame still resized per box — equal to it bit for bit, and it keeps O-net's inputs, so
O-net tracking can start on the next frame. Batches of frames (faceless stretches) still go to
``detect_face`` in one call (:meth:`MtcnnEngine.detect`).

Measured and rejected (agreement with per-frame MTCNN, IoU >= 0.9, fell below 95 %): only the
top-k R-net boxes to O-net (k=3: 83 %), top-k P-net proposals to R-net (k=10: 89 %),
``roi_max_face`` 1.0 (92–94 %; 1.5: 96 %, too close to the bar), ``roi_min_face`` 0.7 (91 %).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avpipe.extractors.area_crops import area_crops
from avpipe.extractors.tracking import iou
from avpipe.extractors.weights import WeightSpec, file_checksum, register_weights
from avpipe.pipeline.stage import StageError

if TYPE_CHECKING:
    from avpipe.extractors.faces import FacesConfig

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


class MtcnnEngine:
    """MTCNN's three nets plus the two operations the stage needs: full cascade and window cascade."""

    def __init__(self, config: FacesConfig, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.config = config
        self.device = torch.device(device)
        # channels_last weights: conv outputs come out NHWC, where CPU max-pooling is much faster
        # than on NCHW (same maths, float rounding aside)
        cl = torch.channels_last
        self.pnet, self.rnet, self.onet = (
            PNet().to(self.device).eval().to(memory_format=cl),
            RNet().to(self.device).eval().to(memory_format=cl),
            ONet().to(self.device).eval().to(memory_format=cl))
        # P-net on the window levels: traced and frozen (no per-layer Python dispatch; outputs equal
        # the eager net's bit for bit, unlike optimize_for_inference's). The full cascade keeps
        # the eager module: facenet-pytorch's detect_face reads its parameters' dtype.
        self.pnet_window = self.pnet
        if self.device.type == "cpu":  # R/O-net: frozen, conv+PReLU through oneDNN (~1.5-2x more)
            self.rnet = _optimized(RNet().eval(), 24, self.rnet)
            self.onet = _optimized(ONet().eval(), 48, self.onet)
            self.pnet_window = _frozen(self.pnet)

    def scale_for(self, frame: np.ndarray) -> float:
        """Down-scale factor of a key frame for the full cascade (1.0 = full resolution)."""
        side = max(frame.shape[:2])
        m = self.config.detect_max_side
        return m / float(side) if m and side > m else 1.0

    def _key_scale(self, frame: np.ndarray) -> tuple[float, float]:
        """A key frame's down-scale factor and the minimum face size on the down-scaled copy
        (scaled with it, never below P-net's 12 px)."""
        scale = self.scale_for(frame)
        return scale, max(12.0, self.config.min_face_size * scale)

    @staticmethod
    def _shrink(frame: np.ndarray, scale: float) -> np.ndarray:
        """``frame`` area-resized by ``scale`` (itself when 1)."""
        import cv2

        if scale == 1.0:
            return frame
        h, w = frame.shape[:2]
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    # -- full cascade --------------------------------------------------------------------------
    def detect(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Full cascade on same-size RGB frames (one batched call). Per frame: boxes (N, 5:
        x0,y0,x1,y1,prob) and landmarks (N, 5, 2), in original-frame pixels."""
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        if not frames:
            return []
        cfg = self.config
        scale, minsize = self._key_scale(frames[0])
        small = [self._shrink(f, scale) for f in frames]
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

    def detect_one(self, frame: np.ndarray) -> "Cascade":
        """The full cascade on one RGB frame with O-net's inputs and candidates, in frame pixels:
        ``boxes[picks]`` / ``points[picks]`` are :meth:`detect`'s answer for the frame, bit for
        bit (on CPU), and the inputs let O-net tracking start on the next frame (see
        :meth:`avpipe.extractors.face_tracker.FaceTracker._key_frame`).

        Why not facenet-pytorch's ``detect_face``: it keeps no O-net inputs, and its pyramid is
        PyTorch's area resize of the whole frame per level plus the eager P-net. Here the levels
        come from one integral image (:func:`avpipe.extractors.area_crops.area_resize`, equal bit
        for bit), P-net is the frozen one the window cascade runs, and R-net/O-net are the
        stage's own steps: the same arithmetic as ``detect_face`` in less time."""
        import torch

        from avpipe.extractors.area_crops import area_resize, integral_image

        cfg = self.config
        scale, minsize = self._key_scale(frame)
        small = np.ascontiguousarray(self._shrink(frame, scale))
        sh, sw = small.shape[:2]
        scales = self.pyramid(sh, sw, minsize)
        if not scales:  # no pyramid level fits: no face can be found
            return Cascade.of(None)
        src = torch.from_numpy(small).to(self.device)
        table = integral_image(small) if self.device.type == "cpu" else None
        with torch.inference_mode():
            cands = []
            for s in scales:
                hs, ws = int(sh * s + 1), int(sw * s + 1)
                level = area_resize(table, hs, ws) if table is not None else None
                if level is None:
                    from facenet_pytorch.models.utils.detect_face import imresample
                    level = imresample(src.permute(2, 0, 1).unsqueeze(0).float(), (hs, ws))
                else:
                    level = torch.from_numpy(level)
                reg, probs = self.pnet_window((level - 127.5) * 0.0078125)
                cands.append(_proposals(reg, probs[:, 1], s, cfg.thresholds[0], 0, 0))
            boxes = _rnet_candidates(cands, None)
            boxes = self._rnet_step(src, boxes, None, spread=True) if boxes is not None else None
            got = self._onet_step(src, boxes) if boxes is not None else None
        c = Cascade.of(got)
        if scale != 1.0:
            c.boxes[:, :4] /= scale
            c.points /= scale
            c.inputs /= scale
        return c

    # -- region-of-interest cascade ------------------------------------------------------------
    def pyramid(self, h: int, w: int, minsize: float | None = None) -> list[float]:
        """MTCNN's scale list for an ``h`` x ``w`` frame (as facenet-pytorch builds it), for faces
        of at least ``minsize`` px (default: ``min_face_size``, a full-resolution frame)."""
        m = 12.0 / (self.config.min_face_size if minsize is None else minsize)
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
            boxes = self._rnet_step(src, boxes, self.config.roi_onet_top_k) if boxes is not None else None
            got = self._onet_step(src, boxes) if boxes is not None else None
        return Cascade.of(got)

    def onet_track(self, frame: np.ndarray, inputs: np.ndarray) -> "Cascade":
        """O-net alone on given square input boxes (N, 4) in frame pixels: score, threshold,
        landmarks, regression and NMS exactly as the cascade's last step. Why this can stand in
        for the cascade on a tracked frame: the cascade's answer *is* O-net's output on the boxes
        R-net hands it; fed boxes placed on the face as R-net placed them on an earlier frame
        (see :meth:`avpipe.extractors.face_tracker.FaceTracker.follow`), O-net sees the same kind
        of input and returns the same kind of box — without P-net and R-net."""
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

        cfg, dev = self.config, self.device
        H, W = int(src.shape[0]), int(src.shape[1])
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        side = max(x1 - x0, y1 - y0, 1.0)
        half = 0.5 * cfg.roi_scale * side
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        rx0, ry0, rx1, ry1 = cx - half, cy - half, cx + half, cy + half
        levels = []
        for scale in self._roi_levels(H, W, side):
            hs, ws = int(H * scale + 1), int(W * scale + 1)
            # window in this level's pixels; even start keeps P-net's stride-2 grid aligned
            c0 = max(0, int(np.floor(rx0 * scale)) - 2) // 2 * 2
            r0 = max(0, int(np.floor(ry0 * scale)) - 2) // 2 * 2
            c1 = min(ws, int(np.ceil(rx1 * scale)) + 2)
            r1 = min(hs, int(np.ceil(ry1 * scale)) + 2)
            if c1 - c0 < 12 or r1 - r0 < 12:
                continue
            my, ya, yb = _level_matrix(H, hs, r0, r1, dev)
            mxt, xa, xb = _level_matrix(W, ws, c0, c1, dev, transposed=True)
            levels.append((scale, c0, r0, my, mxt, ya, yb, xa, xb))
        if not levels:
            return None
        # the frame pixels every level reads, as float NCHW once (each level reads nearly the same)
        uya, uyb = min(v[5] for v in levels), max(v[6] for v in levels)
        uxa, uxb = min(v[7] for v in levels), max(v[8] for v in levels)
        region = _nchw(src, uya, uyb, uxa, uxb)
        cands = []
        for scale, c0, r0, my, mxt, ya, yb, xa, xb in levels:
            px = region[:, :, ya - uya:yb - uya, xa - uxa:xb - uxa]
            level = torch.matmul(torch.matmul(my, px), mxt)
            reg, probs = self.pnet_window((level - 127.5) * 0.0078125)
            cands.append(_proposals(reg, probs[:, 1], scale, cfg.thresholds[0], c0 // 2, r0 // 2))
        return _rnet_candidates(cands, cfg.roi_rnet_top_k)

    @staticmethod
    def _net_input(src: Any, boxes: Any, side: int, spread: bool = False) -> tuple[Any, Any] | None:
        """Boxes that overlap the frame and their ``side``-px crops, normalised as MTCNN (the
        input step shared by R-net and O-net); None if no box overlaps the frame.

        A crop is MTCNN's: ``pad`` clips the box to the frame and the in-frame part is stretched
        to the full side (``imresample``). On CPU all crops come from one batched call
        (:func:`avpipe.extractors.area_crops.area_crops`, equal bit for bit to ``imresample``
        per box, without its per-box dispatch); boxes ``spread`` over the whole frame (a full
        cascade's ~100 R-net candidates), for which one integral image is slower, and other
        devices keep the per-box calls."""
        import torch
        from facenet_pytorch.models.utils.detect_face import imresample, pad

        H, W = int(src.shape[0]), int(src.shape[1])
        y, ey, x, ex = pad(boxes, W, H)
        keep = np.flatnonzero((ey > y - 1) & (ex > x - 1))
        if not len(keep):
            return None
        if src.device.type == "cpu" and not spread:
            y, ey, x, ex = y[keep], ey[keep], x[keep], ex[keep]
            data = torch.from_numpy(area_crops(src.numpy(), y - 1, ey, x - 1, ex, side))
        else:
            data = torch.cat([imresample(_nchw(src, y[k] - 1, ey[k], x[k] - 1, ex[k]), (side, side))
                              for k in keep])
        return boxes[torch.from_numpy(keep).to(boxes.device)], (data - 127.5) * 0.0078125

    def _rnet_step(self, src: Any, boxes: Any, top_k: int | None = None, spread: bool = False) -> Any | None:
        """R-net: score, threshold, NMS 0.7, regression: O-net's candidates (the ``top_k`` best,
        if set), or None. ``spread``: the boxes cover the whole frame (a full cascade)."""
        import torch
        from facenet_pytorch.models.utils.detect_face import bbreg, fixed_batch_process, rerec

        got = self._net_input(src, boxes, 24, spread)
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
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7)  # sorted by score
        if top_k:
            pick = pick[:top_k]
        return rerec(bbreg(boxes[pick], mv[pick]))

    def _onet_step(self, src: Any, boxes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """O-net: score, threshold, landmarks, regression, NMS 0.7 ("Min"): (boxes, points,
        inputs, picks) as float32/int64 arrays — every candidate above the threshold, its O-net
        input box and the indices NMS keeps (MTCNN's answer is ``boxes[picks]``), or None.

        After the net, MTCNN's arithmetic on a handful of rows runs in NumPy float32: the same
        operations in the same order as facenet-pytorch's torch code (so the same bits), without
        a tensor dispatch per operation, which on tracked frames cost more than the arithmetic."""
        from facenet_pytorch.models.utils.detect_face import fixed_batch_process, nms_numpy

        got = self._net_input(src, boxes, 48)
        if got is None:
            return None
        boxes, data = got
        reg, lm, prob = (o.cpu().numpy() for o in fixed_batch_process(data, self.onet))
        score = prob[:, 1]
        ok = score > self.config.thresholds[2]
        if not ok.any():
            return None
        cand = boxes.cpu().numpy()[ok, :4]
        inputs = cand.copy()
        box = np.concatenate([cand, score[ok, None]], 1)
        pts = lm[ok].T  # (10, n): x of the 5 points, then y
        mv = reg[ok]
        w = box[:, 2] - box[:, 0] + 1
        h = box[:, 3] - box[:, 1] + 1
        px = w[None, :] * pts[:5] + box[None, :, 0] - 1
        py = h[None, :] * pts[5:10] + box[None, :, 1] - 1
        pts = np.stack((px, py)).transpose(2, 1, 0)
        box[:, :4] = np.stack([box[:, 0] + mv[:, 0] * w, box[:, 1] + mv[:, 1] * h,  # bbreg
                               box[:, 2] + mv[:, 2] * w, box[:, 3] + mv[:, 3] * h], 1)
        pick = np.asarray(nms_numpy(box[:, :4], box[:, 4], 0.7, "Min"), np.int64)
        return box, pts, inputs, pick

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
        return cls(np.asarray(b, np.float64).reshape(-1, 5), np.asarray(p, np.float64).reshape(-1, 5, 2),
                   np.asarray(i, np.float64).reshape(-1, 4), np.asarray(k, np.int64).reshape(-1))


def _nchw(src: Any, ya: int, yb: int, xa: int, xb: int) -> Any:
    """(1, 3, h, w) float crop of an (H, W, 3) uint8 frame tensor, NCHW-contiguous (area pooling
    of an NHWC-strided view takes a slower kernel; same values)."""
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


def _frozen(net: Any) -> Any:
    """``net`` traced and frozen (TorchScript), for a fully convolutional net taking any input
    size: the same ATen kernels without the per-layer Python module calls. Returned only if its
    outputs equal the eager net's bit for bit on several input sizes, else ``net`` itself."""
    import copy
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            m = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), torch.zeros(1, 3, 24, 30)).eval())
            gen = torch.Generator().manual_seed(0)
            for h, w in ((12, 12), (17, 29), (64, 48)):
                x = torch.rand(1, 3, h, w, generator=gen) * 2 - 1
                if not all(torch.equal(a, b) for a, b in zip(net(x), m(x))):
                    return net
            return m
    except Exception:  # noqa: BLE001 - any failure: keep the eager net
        return net


def _nms(boxes: Any, scores: Any, threshold: float) -> Any:
    """Single-class NMS, kept indices best first: facenet-pytorch's ``batched_nms`` with every box
    in class 0 (what the cascade calls) without its class bookkeeping. Below torchvision's
    size switch its coordinate trick adds an offset of 0 to every box, i.e. is plain ``nms``;
    above it, the batched path is taken as before."""
    import torch
    from torchvision.ops import batched_nms

    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000):
        return batched_nms(boxes, scores, torch.zeros(len(boxes), dtype=torch.long, device=boxes.device),
                           threshold)
    return torch.ops.torchvision.nms(boxes, scores, threshold)  # torchvision.ops.nms minus its logging


@functools.lru_cache(maxsize=64)
def _level_matrix(n_in: int, n_out: int, o0: int, o1: int, device: Any,
                  transposed: bool = False) -> tuple[Any, int, int]:
    """:func:`_area_matrix` as a tensor on ``device`` (``.t()`` of it if ``transposed``), cached:
    a tracked face moves a few pixels between frames, so its windows' matrices repeat (on a
    500-frame test clip, 89 distinct ones for ~3,900 lookups) and building them is most of what
    a small window level costs besides P-net. 64 entries: a few frames' worth of windows, and a
    bound on memory (a matrix is window rows x frame span; large faces on 4K frames make them
    hundreds of KB). Callers must not modify the returned tensor."""
    import torch

    m, i0, i1 = _area_matrix(n_in, n_out, o0, o1)
    t = torch.from_numpy(m).to(device)
    return (t.t() if transposed else t), i0, i1


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


def _proposals(reg: Any, probs: Any, scale: float, thresh: float, off_x: int, off_y: int) -> Any:
    """P-net cells above ``thresh`` as boxes in frame pixels (MTCNN's generateBoundingBox, with
    the window's cell offset added before the floor so coordinates match the full-frame ones),
    then MTCNN's per-level NMS at 0.5."""
    import torch

    mask = probs >= thresh
    inds = mask.nonzero()
    if len(inds) == 0:  # no cell above the threshold (most window levels far from the face size)
        return torch.zeros((0, 9), dtype=reg.dtype, device=reg.device)
    reg = reg.permute(1, 0, 2, 3)
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = inds[:, 1:].type(reg.dtype).flip(1)
    bb[:, 0] += off_x
    bb[:, 1] += off_y
    q1 = ((2 * bb + 1) / scale).floor()
    q2 = ((2 * bb + 12) / scale).floor()
    boxes = torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1)
    return boxes[_nms(boxes[:, :4], boxes[:, 4], 0.5)]


def _rnet_candidates(cands: list[Any], top_k: int | None) -> Any | None:
    """P-net's proposals of every level (each level NMS'd, see :func:`_proposals`) to R-net's
    candidates as MTCNN makes them: NMS 0.7 across levels, the ``top_k`` best if set, P-net's box
    regression, squared. None when there is no proposal."""
    import torch
    from facenet_pytorch.models.utils.detect_face import rerec

    if not cands:
        return None
    boxes = torch.cat(cands, 0)
    if len(boxes) == 0:
        return None
    boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]  # sorted by score
    if top_k:
        boxes = boxes[:top_k]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                         boxes[:, 4]]).permute(1, 0)
    return rerec(boxes)


def onet_anchor(c: Cascade, k: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """What O-net tracking keeps of a cascade whose answer is candidate ``k``: that box and the
    O-net inputs of the (at most ``n``, best first) candidates that landed on the same face —
    the inputs R-net made for it, which :func:`move_inputs` carries along with the face."""
    if n <= 0:
        return None
    box = c.boxes[k, :4]
    same = np.flatnonzero(iou(box, c.boxes[:, :4]) >= 0.5)
    same = same[np.argsort(-c.boxes[same, 4], kind="stable")][:n]
    return box.copy(), c.inputs[same].copy()


def soft_answer(c: Cascade, k: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Box (4,) and landmarks (5, 2): the mean of O-net's answers on the face of candidate ``k``
    (IoU >= 0.5 with it), weighted by their odds ``(p/(1-p))^(1/temperature)``.

    Why: the cascade answers with its most probable candidate, and O-net's probabilities on one
    face are all close to 1, so *which* candidate wins changes from frame to frame — per-frame
    MTCNN's own jitter. A tracker cannot reproduce that draw (its candidates are not P-net's), so
    its best estimate of the cascade's answer is the expected one: the candidates' mean, leaning
    to the more probable ones as the argmax does (large ``temperature``: plain mean; small: the
    argmax)."""
    same = np.flatnonzero(iou(c.boxes[k, :4], c.boxes[:, :4]) >= 0.5)
    p = np.clip(c.boxes[same, 4], 1e-7, 1.0 - 1e-7)
    logit = np.log(p / (1.0 - p)) / temperature
    w = np.exp(logit - logit.max())
    w /= w.sum()
    return (c.boxes[same, :4] * w[:, None]).sum(0), (c.points[same] * w[:, None, None]).sum(0)


def move_inputs(inputs: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``inputs`` (N, 4) moved by the similarity (scale, shift) that takes box ``src`` to ``dst``:
    they keep the place relative to the face that R-net gave them."""
    s = ((dst[2] - dst[0]) + (dst[3] - dst[1])) / max(1e-6, (src[2] - src[0]) + (src[3] - src[1]))
    cs = np.array([(src[0] + src[2]) / 2, (src[1] + src[3]) / 2])
    cd = np.array([(dst[0] + dst[2]) / 2, (dst[1] + dst[3]) / 2])
    out = np.empty_like(inputs)
    out[:, :2] = cd + s * (inputs[:, :2] - cs)
    out[:, 2:] = cd + s * (inputs[:, 2:] - cs)
    return out
