"""The GPU check's extraction part: faces and visual frames/s on generated 720p clips, decode
included and excluded, agreement with the CPU, and the projected Aff-Wild2 wall time (see gpu_check.py)."""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from gpu_check_common import (AFFWILD2_FRAMES, BOX_TOL_PX, EXTRACT_GOAL_S, FACENET_TOL, ROOT, Budget, Report, Sizes,
                              sync, timed)


# ----------------------------------------------------------------------------- extraction
def make_clip(path: Path, n: int, size: tuple[int, int], fps: float = 25.0) -> Path:
    """A ``size`` H.264 clip of ``n`` frames: the committed talking-head clip's frames (a real
    face, MTCNN finds it) scaled to the clip's height and drifting across a moving background."""
    import cv2
    import numpy as np

    from avpipe.extractors.media import iter_frames
    from avpipe.sample.media import write_clip

    src = list(iter_frames(ROOT / "tests/fixtures/media/talking_head.mp4"))
    W, H = size
    h0, w0 = src[0].shape[:2]
    sw = max(1, int(round(w0 * H / h0)))
    yy, xx = np.mgrid[0:H, 0:W + 64].astype(np.float32)
    back = np.stack([90 + 40 * np.sin(xx / 57.0), 110 + 30 * np.cos(yy / 43.0),
                     130 + 35 * np.sin((xx + yy) / 91.0)], -1).clip(0, 255).astype(np.uint8)

    def frames():
        for i in range(n):
            k = i % (2 * len(src) - 2) if len(src) > 1 else 0
            f = src[k if k < len(src) else 2 * len(src) - 2 - k]  # ping-pong: no jump at the loop
            t = i / fps
            s = int(32 + 32 * math.sin(2 * math.pi * t / 5))  # the background drifts too
            bg = back[:, s:s + W].copy()
            x0 = int((W - sw) / 2 + 0.1 * (W - sw) * math.sin(2 * math.pi * t / 8))
            fg = cv2.resize(f, (sw, H), interpolation=cv2.INTER_LINEAR)
            a, b = max(0, x0), min(W, x0 + sw)
            bg[:, a:b] = fg[:, a - x0:b - x0]
            yield bg

    write_clip(path, frames(), fps=fps)
    return path


def part_extract(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import numpy as np
    import torch

    from avpipe.extractors.backbones.facenet import FacenetVggface2
    from avpipe.extractors.faces import Faces, FacesConfig
    from avpipe.extractors.media import iter_frames
    from avpipe.pipeline.types import Runtime

    res = rep.part("extract")
    res.update(clips=[], goal_s=EXTRACT_GOAL_S, frames_projected=AFFWILD2_FRAMES, errors=[], skipped=[])
    dev = torch.device(a.device)
    until = a.extract_until
    n = max(1, int(round(sizes.clip_seconds * 25)))
    W, H = sizes.clip_size
    paths = []
    for c in range(sizes.clips):
        p, s = timed(lambda c=c: make_clip(Path(a.data) / "clips" / f"clip{c}_{W}x{H}.mp4", n + 7 * c, (W, H)))
        paths.append(p)
        res["clips"].append({"path": p.name, "frames": n + 7 * c, "size": [W, H], "make_s": s})
    rep.save()
    cfg = FacesConfig()
    faces_dev = Faces(cfg, runtime=Runtime(device=a.device, batch_size=sizes.faces_batch, num_threads=1))
    faces_dev.ensure_loaded()
    eng = faces_dev.engine
    assert eng is not None
    rows: dict[str, list[float]] = {k: [] for k in ("decode", "faces_frames", "faces_file", "mtcnn_batched",
                                                    "visual_facenet", "visual_dlib_torch")}
    nfr: dict[str, int] = {k: 0 for k in rows}
    crops_all = []
    first_frames: list[np.ndarray] = []
    first_rows = None
    for p in paths:
        if budget.left(until) < 10:
            res["skipped"].append(f"{p.name}: budget")
            continue
        frames, s = timed(lambda p=p: list(iter_frames(p)))
        rows["decode"].append(s)
        nfr["decode"] += len(frames)
        if not first_frames:
            first_frames = frames[: sizes.ref_frames]
        if p == paths[0]:  # warm-up: CUDA context, cuDNN autotuning, allocator
            faces_dev.process(iter(frames[:min(len(frames), 40)]), min(len(frames), 40))
            eng.detect(frames[:sizes.faces_batch])
        sync(dev)
        r, s = timed(lambda: faces_dev.process(iter(frames), len(frames)))
        sync(dev)
        rows["faces_frames"].append(s)
        nfr["faces_frames"] += len(frames)
        if first_rows is None:
            first_rows = r
        _, s = timed(lambda p=p, k=len(frames): faces_dev.process(iter_frames(p), k))
        sync(dev)
        rows["faces_file"].append(s)
        nfr["faces_file"] += len(frames)
        crops = np.asarray(r.extras["crops"])[np.asarray(r.mask, bool)]
        crops_all.append(crops)
        res["clips"][paths.index(p)].update(face_rows=int(np.asarray(r.mask).sum()),
                                            full_detections=int(r.attrs["full_detections"]))

        def batched(frames=frames):
            for i in range(0, len(frames), sizes.faces_batch):
                eng.detect(frames[i:i + sizes.faces_batch])
        _, s = timed(batched)
        sync(dev)
        rows["mtcnn_batched"].append(s)
        nfr["mtcnn_batched"] += len(frames)
        rep.log(f"{p.name}: decode {len(frames) / rows['decode'][-1]:.0f} f/s, faces "
                f"{len(frames) / rows['faces_frames'][-1]:.1f} f/s (decoded), "
                f"{len(frames) / rows['faces_file'][-1]:.1f} f/s (from file), batched MTCNN "
                f"{len(frames) / rows['mtcnn_batched'][-1]:.1f} f/s")
        rep.save()
    crops = np.concatenate(crops_all) if crops_all else np.zeros((0, 112, 112, 3), np.uint8)
    backbones: list[tuple[str, Any]] = [("visual_facenet", FacenetVggface2(random_init_for_tests=True))]
    try:
        from avpipe.extractors.backbones import create_backbone

        bb = create_backbone("dlib-torch")
        bb.load(a.device, {})
        backbones.append(("visual_dlib_torch", bb))
    except Exception as e:  # noqa: BLE001 - weights are not on the GPU machine
        res["skipped"].append(f"dlib-torch: {type(e).__name__}: {str(e)[:200]}")
    emb_ref: dict[str, Any] = {}
    for key, bb in backbones:
        if budget.left(until) < 5 or not len(crops):
            res["skipped"].append(f"{key}: budget or no crops")
            continue
        if key == "visual_facenet":
            bb.load(a.device, {})
        bb.embed(crops[: sizes.visual_batch])
        sync(dev)
        t = time.perf_counter()
        for i in range(0, len(crops), sizes.visual_batch):
            bb.embed(crops[i:i + sizes.visual_batch])
        sync(dev)
        rows[key].append(time.perf_counter() - t)
        nfr[key] += len(crops)
        emb_ref[key] = bb
    fps = {k: (nfr[k] / sum(v) if v and sum(v) > 0 else None) for k, v in rows.items()}
    res["frames_per_s"] = fps
    res["frames_timed"] = nfr
    res["seconds"] = {k: sum(v) for k, v in rows.items()}
    res["decode_excluded_faces_fps"] = fps["faces_frames"]
    res["decode_included_faces_fps"] = fps["faces_file"]
    if fps["faces_file"] and fps["visual_facenet"]:
        per_frame = 1 / fps["faces_file"] + 1 / fps["visual_facenet"]
        res["projection"] = {
            "how": "2.8 M frames x (1/faces f/s from the file + 1/visual f/s), one process on one device; "
                   "visual per frame with a face (every frame of these clips)",
            "seconds": AFFWILD2_FRAMES * per_frame, "hours": AFFWILD2_FRAMES * per_frame / 3600,
            "goal_hours": EXTRACT_GOAL_S / 3600, "meets_goal": AFFWILD2_FRAMES * per_frame <= EXTRACT_GOAL_S}
    if fps["decode"] and fps["mtcnn_batched"] and fps["visual_facenet"]:
        # the alternative the batched row stands for: every frame through the batched full cascade,
        # decode not overlapped (an upper bound on its wall time)
        per_frame = 1 / fps["decode"] + 1 / fps["mtcnn_batched"] + 1 / fps["visual_facenet"]
        res["projection_batched_mtcnn"] = {
            "how": "2.8 M frames x (1/decode + 1/batched full-cascade MTCNN + 1/visual), decode not overlapped",
            "seconds": AFFWILD2_FRAMES * per_frame, "hours": AFFWILD2_FRAMES * per_frame / 3600,
            "goal_hours": EXTRACT_GOAL_S / 3600, "meets_goal": AFFWILD2_FRAMES * per_frame <= EXTRACT_GOAL_S}
    rep.save()
    # device vs CPU on the first frames
    if first_frames and budget.left(until) > 5:
        try:
            res["vs_cpu"] = compare_cpu(first_frames, first_rows, crops[: sizes.ref_frames], emb_ref, cfg, a.device)
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"vs cpu: {type(e).__name__}: {e}")
    res["status"] = "done" if not res["errors"] else "errors"
    return res


def compare_cpu(frames: list[Any], dev_rows: Any, crops: Any, backbones: dict[str, Any], cfg: Any,
                device: str) -> dict[str, Any]:
    """Per-stage max abs difference between the device's and the CPU's outputs on the same input."""
    import numpy as np
    import torch

    from avpipe.extractors.backbones.facenet import FacenetVggface2
    from avpipe.extractors.face_columns import LANDMARKS
    from avpipe.extractors.faces import Faces
    from avpipe.pipeline.types import Runtime

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    k = len(frames)
    cpu = Faces(cfg, runtime=Runtime(device="cpu", num_threads=max(1, os.cpu_count() or 1)))
    r = cpu.process(iter(frames), k)
    m_dev, m_cpu = np.asarray(dev_rows.mask[:k], bool), np.asarray(r.mask, bool)
    both = m_dev & m_cpu
    d = np.abs(np.asarray(dev_rows.data[:k])[both][:, :LANDMARKS.stop] - np.asarray(r.data)[both][:, :LANDMARKS.stop])  # box + landmarks
    out: dict[str, Any] = {
        "frames": k, "faces": {"mask_agreement": float((m_dev == m_cpu).mean()),
                               "box_landmark_max_abs_px": float(d.max()) if d.size else None,
                               "box_landmark_mean_abs_px": float(d.mean()) if d.size else None,
                               "tol_px": BOX_TOL_PX,
                               "ok": bool((m_dev == m_cpu).all() and (not d.size or d.max() <= BOX_TOL_PX))}}
    for key, bb in backbones.items():
        if not len(crops):
            continue
        ref = FacenetVggface2(random_init_for_tests=True) if key == "visual_facenet" else type(bb)()
        ref.load("cpu", {})
        e_cpu = ref.embed(crops)
        e_dev = bb.embed(crops)
        diff = float(np.abs(e_cpu - e_dev).max())
        out[key] = {"crops": len(crops), "max_abs_diff": diff, "tol": FACENET_TOL, "ok": diff <= FACENET_TOL}
    return out
