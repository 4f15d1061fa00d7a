"""Faces stage speed and agreement: per-frame MTCNN (naive) vs the stage's trackers.

* ``naive``: facenet-pytorch ``MTCNN.detect`` on every full-resolution frame;
* ``window``: ``track_onet_inputs = 0`` (the default before #24, version 4's output): the full
  cascade on key frames, the cascade in a window around the face in between;
* ``onet``: plain O-net tracking (``track_onet_inputs`` N, no re-anchoring, no odds weighting, no
  smoothing): O-net alone on the last cascade's O-net inputs, moved with the face;
* ``default``: the stage's defaults (O-net tracking with 4 inputs, re-anchored every 4th tracked
  frame, odds-weighted, smoothed over ±2 frames).

All run in this one process, same threads, on the same decoded frames (decode excluded; the
stage's own streaming decode is timed once more for ``default``), interleaved repeat by repeat, and
the median of ``--repeats`` is reported. Agreement: the share of frames whose box has IoU >= 0.9
with naive's; landmark distance: the mean over frames of the mean distance of the 5 landmarks to
naive's (px and % of naive's box width). ``naive self``: naive's own box against its box on the
next frame (how much per-frame MTCNN jitters). On the generated clips the true landmark
positions are known (the source photo's landmarks, found once by MTCNN on the 512x512 original,
carried by the generator's own transform), so each method's landmark error to them is printed
too (``truth``).

    .venv/bin/python benchmarks/bench_faces.py --repeats 3 --threads 1 [--old REV] \
        [--method 'NAME=key=value,key=value']

``--old REV`` adds the stage as it was at a git revision (its defaults), timed in the same loop (in
a fresh interpreter on that revision's exported tree where the stage spans several modules);
each ``--method`` adds the stage with those ``FacesConfig`` fields set (e.g.
``soft=track_onet_inputs=5,track_onet_temperature=3,track_onet_refresh=3``), timed in the same loop.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(into: list[float], f, *args):
    """``f(*args)``, its wall seconds appended to ``into``."""
    t = time.perf_counter()
    out = f(*args)
    into.append(time.perf_counter() - t)
    return out


def naive(frames, mtcnn):
    boxes, lms = [], []
    for f in frames:
        b, _p, lm = mtcnn.detect(f, landmarks=True)
        boxes.append(None if b is None else np.asarray(b[0], np.float64))  # largest first
        lms.append(None if lm is None else np.asarray(lm[0], np.float64))
    return boxes, lms


def truth_landmarks(mtcnn, n: int, size: tuple[int, int], fps: float = 25.0) -> np.ndarray:
    """(n, 5, 2) landmarks of the one-face clip ``face_frames(n, size)`` makes: the source photo's
    (MTCNN on the original) under the per-frame scale and shift of
    :func:`avpipe.sample.media.face_frames` (same formula, written out here)."""
    from avpipe.sample.media import ASTRONAUT_FACE_BOX, astronaut

    _b, _p, lm = mtcnn.detect(astronaut(), landmarks=True)
    l0 = np.asarray(lm[0], np.float64)
    w, h = size
    fx = (ASTRONAUT_FACE_BOX[0] + ASTRONAUT_FACE_BOX[2]) / 2
    fy = (ASTRONAUT_FACE_BOX[1] + ASTRONAUT_FACE_BOX[3]) / 2
    out = []
    for i in range(n):
        t = i / fps
        s = (h / 512.0) * 1.25 * (1.0 + 0.04 * np.sin(2 * np.pi * t / 5.0))
        tx = 0.5 * w - s * fx + 6.0 * np.sin(2 * np.pi * t / 4.0)
        ty = 0.45 * h - s * fy + 4.0 * np.cos(2 * np.pi * t / 6.0)
        out.append(l0 * s + np.array([tx, ty]))
    return np.stack(out)


# run by a separate interpreter on an exported revision: times its default ``faces`` stage on a
# clip's decoded frames once (after a warm-up) and saves its rows
_OLD_SCRIPT = """
import sys, time, numpy as np, torch
from avpipe.extractors.faces import Faces, FacesConfig
from avpipe.extractors.media import iter_frames
path, n, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
frames = list(iter_frames(path))
st = Faces(FacesConfig())
st.ensure_loaded()
torch.set_num_threads(threads)
st.process(iter(frames[:40]), min(40, n))
t = time.perf_counter()
r = st.process(iter(frames), n)
secs = time.perf_counter() - t
np.savez(out, data=r.data, mask=r.mask, secs=secs, full=r.attrs["full_detections"])
"""


class OldRevision:
    """The ``faces`` stage at a git revision whose stage spans several modules (they would be
    today's if imported here): each :meth:`process` runs it in a fresh interpreter on that
    revision's exported tree, on the same clip, and reports the seconds its ``process`` took
    there (the interpreter, import and model load are not timed)."""

    def __init__(self, rev: str, root: Path, tmp: Path, threads: int) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_memory import export_revision

        self.tree = export_revision(rev, tmp / f"rev_{rev}")
        self.threads, self.tmp = threads, tmp

    def process(self, path: Path, n: int, into: list[float]):
        import os
        import subprocess
        from types import SimpleNamespace

        out = self.tmp / "old_rows.npz"
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        subprocess.run([sys.executable, "-c", _OLD_SCRIPT, str(path), str(n), str(self.threads), str(out)],
                       env=env, cwd=str(self.tree), check=True, capture_output=True)
        z = np.load(out)
        into.append(float(z["secs"]))
        return SimpleNamespace(data=z["data"], mask=z["mask"], attrs={"full_detections": int(z["full"])})


def old_faces(rev: str, root: Path, tmp: Path, threads: int):
    """The ``Faces`` stage of ``avpipe/extractors/faces.py`` at git revision ``rev`` (its default
    config), imported beside today's without registering it; an :class:`OldRevision` where the
    stage spans several modules."""
    import importlib.util
    import subprocess

    import avpipe.pipeline.stage as stage_mod

    path = tmp / f"faces_{rev}.py"
    src = subprocess.check_output(["git", "-C", str(root), "show", f"{rev}:avpipe/extractors/faces.py"])
    if b"avpipe.extractors.mtcnn" in src:  # split into modules: they would be today's, not rev's
        return OldRevision(rev, root, tmp, threads)
    path.write_bytes(src)
    saved = dict(stage_mod._REGISTRY)
    stage_mod._REGISTRY.pop("faces", None)
    try:
        spec = importlib.util.spec_from_file_location(f"faces_{rev}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
        spec.loader.exec_module(mod)
    finally:
        stage_mod._REGISTRY.clear()
        stage_mod._REGISTRY.update(saved)
    return mod.Faces(mod.FacesConfig())


def _number(v: str) -> bool | int | float | None:
    """A ``--method`` field value: int, float, ``true``/``false`` or ``none``."""
    if v.lower() == "none":
        return None
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return int(v) if v.lstrip("-").isdigit() else float(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long-seconds", type=float, default=20.0, help="generated 640x360 clip length")
    ap.add_argument("--short-seconds", type=float, default=3.0, help="generated 576x768 clip length")
    ap.add_argument("--hd-seconds", type=float, default=10.0, help="generated 1280x720 clip length (0: none)")
    ap.add_argument("--onet-inputs", type=int, default=3, help="track_onet_inputs of the onet method")
    ap.add_argument("--old", default=None, metavar="REV",
                    help="also time the faces stage of this git revision (its defaults) as method 'old'")
    ap.add_argument("--method", action="append", default=[], metavar="NAME=key=value,...",
                    help="also time the stage with these FacesConfig fields (repeatable)")
    args = ap.parse_args()

    import torch
    from facenet_pytorch import MTCNN

    from avpipe.extractors.face_columns import BOX, LANDMARKS
    from avpipe.extractors.faces import Faces, FacesConfig
    from avpipe.extractors.media import iter_frames
    from avpipe.extractors.tracking import iou
    from avpipe.sample.media import face_frames, write_clip

    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp())
    clips = [("talking head 480x360", root / "tests/fixtures/media/talking_head.mp4", None)]
    sizes = [(args.long_seconds, (640, 360)), (args.short_seconds, (576, 768)), (args.hd_seconds, (1280, 720))]
    for secs, size in (x for x in sizes if x[0] > 0):
        path = tmp / f"gen_{size[0]}x{size[1]}_{secs:g}s.mp4"
        write_clip(path, face_frames(int(secs * 25), size=size), fps=25.0)
        clips.append((f"generated {secs:g}s {size[0]}x{size[1]}", path, size))
    mt = MTCNN(device="cpu")
    plain = dict(track_onet_refresh=None, track_onet_temperature=None, track_onet_smooth=None)
    stages = {"window": Faces(FacesConfig(track_onet_inputs=0)),
              "onet": Faces(FacesConfig(track_onet_inputs=args.onet_inputs, **plain)),
              "default": Faces(FacesConfig())}
    for spec in args.method:
        name, _, fields = spec.partition("=")
        kw = {k: _number(v) for k, _, v in (f.partition("=") for f in fields.split(",") if f)}
        stages[name] = Faces(FacesConfig(**kw))
    old = old_faces(args.old, root, tmp, args.threads) if args.old else None
    if old is not None and not isinstance(old, OldRevision):
        stages = {"old": old, **stages}
    for st in stages.values():
        st.ensure_loaded()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} repeats={args.repeats} onet: track_onet_inputs={args.onet_inputs} "
          f"methods: {args.method}")
    for name, path, size in clips:
        frames = list(iter_frames(path))
        n = len(frames)
        times: dict[str, list[float]] = {"naive": [], "default+decode": [], **{k: [] for k in stages}}
        res = {}
        if isinstance(old, OldRevision):
            times = {"old": [], **times}
        for _ in range(args.repeats):
            if isinstance(old, OldRevision):
                res["old"] = old.process(path, n, times["old"])
            nb, nl = timed(times["naive"], naive, frames, mt)
            for k, st in stages.items():
                res[k] = timed(times[k], st.process, iter(frames), n)
            timed(times["default+decode"], stages["default"].process, iter_frames(path), n)
        med = {k: statistics.median(v) for k, v in times.items()}
        self_iou = np.array([iou(a, b[None])[0] for a, b in zip(nb, nb[1:]) if a is not None and b is not None])
        truth = truth_landmarks(mt, n, size) if size is not None else None
        print(f"\n{name}: {n} frames; naive {n / med['naive']:.1f} f/s; naive self (t vs t+1) IoU>=0.9 "
              f"{(self_iou >= 0.9).mean():.3f}, median {np.median(self_iou):.3f}")
        if truth is not None:
            ok = [i for i, lm in enumerate(nl) if lm is not None]
            e = np.linalg.norm(np.stack([nl[i] for i in ok]) - truth[ok], axis=2).mean()
            print(f"  naive landmark error to truth: {e:.2f} px")
        print(f"  {'method':8s} {'f/s':>7s} {'x naive':>7s} {'IoU>=.9':>7s} {'min IoU':>7s} {'lm px':>6s} "
              f"{'lm %box':>7s} {'truth px':>8s} {'full det':>8s}")
        for k, r in res.items():
            ious = np.array([iou(b, r.data[i, None, BOX])[0] if b is not None and r.mask[i] else
                             (1.0 if b is None and not r.mask[i] else 0.0) for i, b in enumerate(nb)])
            both = [i for i, b in enumerate(nb) if b is not None and r.mask[i]]
            lm = r.data[both][:, LANDMARKS].reshape(-1, 5, 2).astype(np.float64)
            d = np.linalg.norm(lm - np.stack([nl[i] for i in both]), axis=2).mean(1)
            width = np.array([nb[i][2] - nb[i][0] for i in both])
            tr = f"{np.linalg.norm(lm - truth[both], axis=2).mean():8.2f}" if truth is not None else f"{'-':>8s}"
            print(f"  {k:8s} {n / med[k]:7.1f} {med['naive'] / med[k]:7.2f} {(ious >= 0.9).mean():7.3f} "
                  f"{ious.min():7.3f} {d.mean():6.2f} {100 * (d / width).mean():6.2f}% {tr} "
                  f"{r.attrs['full_detections']:8d}")
        print(f"  default with its streaming decode: {n / med['default+decode']:.1f} f/s "
              f"({med['naive'] / med['default+decode']:.2f}x naive)")


if __name__ == "__main__":
    main()
