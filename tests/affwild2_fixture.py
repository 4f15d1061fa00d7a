"""An Aff-Wild2-shaped corpus made in the tests (the real data is licence-gated).

Layout (as the ABAW releases name things; the media are tiny and synthetic)::

    videos/batch1/1-30-1280x720.mp4      one person
    videos/batch1/video10_1.mp4          two people (annotated as video10_1_left / _right)
    videos/batch2/video20.mp4            two people (validation)
    videos/batch2/video30_2.mp4          two people (test: no labels, in the sample file)
    labels/Train_Set/<name>.txt          header "valence,arousal", one line per frame, -5 = unlabelled
    labels/Validation_Set/<name>.txt
    cropped_aligned/<stem>[_left|_right]/NNNNN.jpg   1-based frames, some missing (no face)
    CVPR_6th_ABAW_VA_test_set_sample.txt  image_location,valence,arousal

Faces: the left person is the astronaut photograph, the right person its mirror image drawn
larger (so the video's *main* face is the right one). Each person's drawn mouth opens with their
own valence and a bar on their forehead thickens with their own arousal, so a person's labels are
visible only on that person's face: features from the wrong person do not predict them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avpipe.sample.media import ASTRONAUT_FACE_BOX, _background, astronaut, write_clip

FPS = 10.0
N_FRAMES = 60
SIZE = (256, 192)
CROP = 112
TRAIN = {"1-30-1280x720": 1, "video10_1": 2}
VAL = {"video20": 2}
TEST = {"video30_2": 2}
BATCH = {"1-30-1280x720": "batch1", "video10_1": "batch1", "video20": "batch2",
         "video30_2": "batch2"}
MISSING_CROP_EVERY = 13  # every 13th frame has no crop file (no face found by the organisers)


@dataclass
class Person:
    side: str | None  # "left" / "right" / None (single-person video)
    mirror: bool
    cx: float  # face centre, fraction of the width
    rel: float  # face scale
    valence: np.ndarray  # (N_FRAMES,)
    arousal: np.ndarray


def _curve(seed: int, n: int = N_FRAMES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    f1, f2 = rng.uniform(0.08, 0.25, 2)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    return (0.55 * np.sin(2 * np.pi * f1 * t + p1) + 0.35 * np.sin(2 * np.pi * f2 * t + p2)).astype(np.float32)


def people(name: str) -> list[Person]:
    seed = sum(map(ord, name))
    n = (TRAIN | VAL | TEST)[name]
    if n == 1:
        return [Person(None, False, 0.5, 1.0, _curve(seed), _curve(seed + 1))]
    return [Person("left", False, 0.27, 0.75, _curve(seed), _curve(seed + 1)),
            Person("right", True, 0.73, 0.95, _curve(seed + 2), _curve(seed + 3))]


@functools.lru_cache(maxsize=1)
def _photo() -> tuple[np.ndarray, np.ndarray]:
    """The photograph and the head region pasted into frames (an ellipse around the face box)."""
    import cv2

    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX
    head = np.zeros((512, 512), np.uint8)
    cv2.ellipse(head, (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int((x1 - x0) * 0.75), int((y1 - y0) * 0.7)),
                0, 0, 360, 255, -1)
    return astronaut(), head


def _face_source(p: Person, i: int) -> np.ndarray:
    """The 512x512 photograph with this person's mouth and forehead bar for frame ``i``."""
    import cv2

    img = _photo()[0].copy()
    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX
    cx = int((x0 + x1) / 2)
    v, a = float(p.valence[i]), float(p.arousal[i])
    cv2.ellipse(img, (cx, int(y1 - 42)), (26, int(3 + 16 * (v + 1) / 2)), 0, 0, 360, (70, 15, 25), -1)
    cv2.rectangle(img, (cx - 32, int(y0 + 18)), (cx + 32, int(y0 + 20 + 14 * (a + 1) / 2)), (20, 20, 90), -1)
    return img[:, ::-1].copy() if p.mirror else img


def _placement(p: Person, size: tuple[int, int], i: int) -> np.ndarray:
    w, h = size
    s = p.rel * (h / 512.0) * 1.25
    t = i / FPS
    fx = (ASTRONAUT_FACE_BOX[0] + ASTRONAUT_FACE_BOX[2]) / 2
    fy = (ASTRONAUT_FACE_BOX[1] + ASTRONAUT_FACE_BOX[3]) / 2
    if p.mirror:
        fx = 512 - fx
    tx = p.cx * w - s * fx + 4.0 * np.sin(2 * np.pi * t / 4.0)
    ty = 0.45 * h - s * fy + 3.0 * np.cos(2 * np.pi * t / 6.0)
    return np.array([[s, 0, tx], [0, s, ty]], np.float32)


def frames(name: str, size: tuple[int, int] = SIZE, hide: dict[str, range] | None = None):
    """The video's frames; ``hide`` = {side: frame range} leaves that person out (gone a while)."""
    import cv2

    w, h = size
    ps = people(name)
    for i in range(N_FRAMES):
        frame = _background(w, h, i / FPS)
        for p in ps:
            if hide and i in hide.get(p.side or "", ()):
                continue
            m = _placement(p, size, i)
            src = _face_source(p, i)
            head = _photo()[1][:, ::-1] if p.mirror else _photo()[1]
            warped = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR)
            cover = cv2.warpAffine(np.ascontiguousarray(head), m, (w, h)) > 0
            frame[cover] = warped[cover]
        yield frame


def crop(p: Person, i: int) -> np.ndarray:
    """The organisers'-style aligned crop (CROP x CROP, RGB) of person ``p`` at frame ``i``."""
    import cv2

    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX
    s = CROP / ((y1 - y0) * 1.3)
    fx = 512 - (x0 + x1) / 2 if p.mirror else (x0 + x1) / 2
    m = np.array([[s, 0, CROP / 2 - s * fx], [0, s, CROP / 2 - s * (y0 + y1) / 2]], np.float32)
    return cv2.warpAffine(_face_source(p, i), m, (CROP, CROP), flags=cv2.INTER_AREA)


def label_name(name: str, p: Person) -> str:
    return f"{name}_{p.side}" if p.side else name


def write_labels(path: Path, p: Person, unlabelled: slice | None = None) -> None:
    va = np.stack([p.valence, p.arousal], 1)
    lines = ["valence,arousal"] + [f"{v:.4f},{a:.4f}" for v, a in va]
    if unlabelled is not None:
        for k in range(N_FRAMES)[unlabelled]:
            lines[k + 1] = "-5,-5"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@dataclass
class AffWild2Tree:
    root: Path
    videos: Path
    labels: Path
    crops: Path
    sample: Path


def make_affwild2_tree(root: str | Path, *, crops: bool = True) -> AffWild2Tree:
    """Write the whole tree under ``root`` (a few seconds)."""
    import cv2

    root = Path(root)
    videos, labels, ctree = root / "videos", root / "labels", root / "cropped_aligned"
    t = np.arange(int(N_FRAMES / FPS * 16000)) / 16000
    tone = (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    for name in TRAIN | VAL | TEST:
        write_clip(videos / BATCH[name] / f"{name}.mp4", frames(name), fps=FPS, audio=tone, audio_rate=16000,
                   crf=20)
        for k, p in enumerate(people(name)):
            split = "Train_Set" if name in TRAIN else "Validation_Set" if name in VAL else None
            if split:
                # -5 rows: the first frames of one person, a stretch in the middle of the other
                write_labels(labels / split / f"{label_name(name, p)}.txt", p,
                             slice(0, 3) if k == 0 else slice(30, 35))
            if crops:
                d = ctree / label_name(name, p)
                d.mkdir(parents=True, exist_ok=True)
                for i in range(N_FRAMES):
                    if (i + 1) % MISSING_CROP_EVERY:
                        cv2.imwrite(str(d / f"{i + 1:05d}.jpg"), crop(p, i)[:, :, ::-1])
    sample = root / "CVPR_6th_ABAW_VA_test_set_sample.txt"
    rows = ["image_location,valence,arousal"]
    for name in TEST:
        for p in people(name):
            rows += [f"{label_name(name, p)}/{i + 1:05d}.jpg," for i in range(N_FRAMES)]
    sample.write_text("\n".join(rows) + "\n")
    return AffWild2Tree(root, videos, labels, ctree, sample)
