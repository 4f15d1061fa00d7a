"""The sample corpus: small labelled talking-head videos made offline, in Aff-Wild2's layout.

It is SYNTHETIC. Each video has smooth per-frame valence/arousal curves, and the media follow
them on purpose so that fusion has something to learn:

* arousal drives the speech (espeak-ng rate, pitch, volume per sentence) and the lighting;
* valence picks positive or negative sentences (text) and bends a drawn mouth (face);
* face photograph variations (mirror, scale) differ per video.

A model's CCC on it therefore says nothing about real-world affect; it shows the pipeline works
end to end. Layout written under ``out``::

    videos/<name>.mp4
    labels/Train_Set/<name>.txt        header "valence,arousal", one line per frame, -5 = unlabelled
    labels/Validation_Set/<name>.txt
    README.txt
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSITIVE = [
    "I love this wonderful sunny day.",
    "What a great and happy surprise.",
    "This is fantastic news, thank you so much.",
    "I feel calm, safe and really glad.",
    "Everything went perfectly well today.",
]
NEGATIVE = [
    "This is terrible and I feel awful.",
    "I hate how sad and lonely this is.",
    "What a horrible, painful mistake.",
    "I am so tired and angry right now.",
    "Nothing works and everything is broken.",
]


@dataclass
class SampleVideo:
    name: str
    split: str
    n_frames: int
    path: Path
    label_path: Path


def _smooth_curve(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """A smooth curve in [-0.9, 0.9]: a few random sinusoids, like slow affect changes."""
    t = np.arange(n) / fps
    y = np.zeros(n)
    for _ in range(3):
        f = rng.uniform(0.05, 0.35)
        y += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    y += rng.uniform(-0.5, 0.5)
    return np.clip(0.9 * y / max(1.0, np.abs(y).max()), -0.9, 0.9)


def make_video(out: Path, name: str, split: str, seed: int, *, fps: float = 25.0,
               size: tuple[int, int] = (320, 240), n_sentences: int = 3) -> SampleVideo:
    from avpipe.sample.media import face_frames, write_clip
    from avpipe.sample.speech import synthesize

    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    sr = 22050
    # Sentences are chosen and voiced from the curves, so draw curves on a generous time axis
    # first, then cut the clip to the speech actually produced.
    max_n = int(40 * fps)
    valence = _smooth_curve(rng, max_n, fps)
    arousal = _smooth_curve(rng, max_n, fps)
    cursor = 0.4
    pieces.append(np.zeros(int(cursor * sr), np.float32))
    for _ in range(n_sentences):
        i = min(int(cursor * fps), max_n - 1)
        v, a = valence[i], arousal[i]
        text = (POSITIVE if v >= 0 else NEGATIVE)[int(rng.integers(0, 5))]
        sp = synthesize(text, rate_wpm=int(135 + 60 * a), pitch=int(50 + 30 * a),
                        volume=int(100 + 60 * a), pitch_range=int(50 + 40 * a))
        sr = sp.sample_rate
        pieces.append(sp.samples.astype(np.float32) / 32768.0)
        gap = float(rng.uniform(0.3, 0.7))
        pieces.append(np.zeros(int(gap * sr), np.float32))
        cursor += sp.duration + gap
    wave = np.concatenate(pieces)
    n_frames = int(len(wave) / sr * fps)
    valence, arousal = valence[:n_frames], arousal[:n_frames]
    mirror = bool(rng.integers(0, 2))
    zoom = float(rng.uniform(0.85, 1.15))
    frames = face_frames(
        n_frames, size, fps=fps, mirror=mirror, zoom=zoom,
        brightness=lambda t: 0.75 + 0.3 * (arousal[min(int(t * fps), n_frames - 1)] + 1) / 2,
        expression=lambda t: float(valence[min(int(t * fps), n_frames - 1)]),
    )
    vpath = out / "videos" / f"{name}.mp4"
    write_clip(vpath, frames, fps=fps, audio=wave, audio_rate=sr)
    labels = np.stack([valence, arousal], 1)
    # Aff-Wild2 marks frames without annotation with -5: drop a short run in each video.
    s = int(rng.integers(0, max(1, n_frames - 10)))
    labels[s:s + int(rng.integers(3, 10))] = -5
    lpath = out / "labels" / split / f"{name}.txt"
    lpath.parent.mkdir(parents=True, exist_ok=True)
    with open(lpath, "w") as fh:
        fh.write("valence,arousal\n")
        for v, a in labels:
            fh.write(f"{v:.4f},{a:.4f}\n" if v != -5 else "-5,-5\n")
    return SampleVideo(name, split, n_frames, vpath, lpath)


def make_corpus(out: str | Path, n_videos: int = 12, *, val_fraction: float = 0.34,
                seed: int = 0, progress: bool = True) -> list[SampleVideo]:
    """Write ``n_videos`` labelled clips under ``out`` (existing identical files are rewritten
    byte-identically: generation is deterministic for a seed)."""
    out = Path(out)
    n_val = max(1, int(round(n_videos * val_fraction))) if n_videos > 1 else 0
    vids = []
    it = range(n_videos)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="sample videos", unit="video")
    for i in it:
        split = "Validation_Set" if i >= n_videos - n_val else "Train_Set"
        vids.append(make_video(out, f"sample_{i:03d}", split, seed * 1000 + i))
    (out / "README.txt").write_text(
        "avpipe sample corpus: SYNTHETIC talking-head videos (scikit-image's astronaut photo,\n"
        "espeak-ng speech). Valence/arousal labels are curves that the speech prosody, sentence\n"
        "polarity, lighting and a drawn mouth follow by construction. CCC on this corpus says\n"
        "nothing about real-world affect; it only shows the pipeline working end to end.\n")
    return vids
