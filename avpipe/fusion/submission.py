"""The ABAW valence/arousal test-set submission file.

Format (ABAW6 onward): one text file, header ``image_location,valence,arousal``, one row per frame
the organisers list in their sample file (e.g. ``CVPR_6th_ABAW_VA_test_set_sample.txt``), in the
sample file's order; ``image_location`` is ``<video>/<frame:05d>.jpg`` with a 1-based frame, the
name of the organisers' cropped-aligned image. ``<video>`` may be ``X_left``/``X_right``: those
rows come from that person's face track (:mod:`avpipe.fusion.persons`), sharing video ``X``'s audio.

Every listed frame must be predicted: a video that is not cached or has no such person, or a frame
beyond the video's length, is an error naming it (:class:`SubmissionError`), and no file is
written — a submission with silently invented rows would be scored as if it were real.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from avpipe.pipeline.atomic import atomic_write_text

HEADER = ("image_location", "valence", "arousal")
_LOCATION = re.compile(r"^(?P<video>[^/\\]+)/(?P<frame>\d{5,})\.jpg$")


class SubmissionError(ValueError):
    """The sample file is malformed, or some listed frames cannot be predicted."""


def read_sample(path: str | Path) -> list[tuple[str, str, int]]:
    """(image_location, video name, 1-based frame) per row of the organisers' sample file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise SubmissionError(f"cannot read the sample file {path}: {e}") from e
    lines = text.splitlines()
    if not lines or lines[0].split(",")[0].strip().lower() != HEADER[0]:
        raise SubmissionError(f"{path}: first line must be the header {','.join(HEADER)!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        loc = line.split(",")[0].strip()
        if not loc:
            continue
        m = _LOCATION.match(loc)
        if m is None or int(m["frame"]) < 1:
            raise SubmissionError(f"{path}:{n}: image_location {loc!r} is not '<video>/<frame:05d>.jpg' "
                                  f"with a 1-based frame")
        rows.append((loc, m["video"], int(m["frame"])))
    if not rows:
        raise SubmissionError(f"{path}: lists no frames")
    return rows


def render_submission(rows: Iterable[tuple[str, str, int]],
                      predict: Callable[[str], np.ndarray]) -> str:
    """The submission text: ``predict(video name)`` gives that name's (n_frames, 2) predictions
    (or raises ``LookupError``/``ValueError`` naming why not). Values are clipped to [-1, 1].
    Raises :class:`SubmissionError` listing every frame it cannot predict."""
    preds: dict[str, np.ndarray | None] = {}
    why: dict[str, str] = {}
    bad: list[str] = []
    s = io.StringIO()
    w = csv.writer(s, lineterminator="\n")
    w.writerow(HEADER)
    for loc, video, frame in rows:
        if video not in preds:
            try:
                preds[video] = np.clip(np.asarray(predict(video), np.float64).reshape(-1, 2), -1, 1)
            except (LookupError, ValueError) as e:
                preds[video], why[video] = None, str(e)
        p = preds[video]
        if p is None:
            bad.append(f"{loc} ({why[video]})")
        elif frame > len(p):
            bad.append(f"{loc} (video {video!r} has {len(p)} frames)")
        else:
            w.writerow((loc, f"{p[frame - 1, 0]:.6f}", f"{p[frame - 1, 1]:.6f}"))
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise SubmissionError(f"{len(bad)} listed frame(s) cannot be predicted: {'; '.join(bad[:5])}{more}")
    return s.getvalue()


def write_submission(sample: str | Path, out: str | Path, predict: Callable[[str], np.ndarray]) -> Path:
    """Read ``sample``, predict every listed frame, write ``out`` atomically (nothing on error)."""
    text = render_submission(read_sample(sample), predict)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out


def run_predictor(run_path: str | Path, keys: list[str], *, cache: str | None = None,
                  device: str = "auto", source=None) -> Callable[[str], np.ndarray]:
    """``predict(name)`` for a trained run: ``name`` is a video stem or ``X_left``/``X_right``,
    matched to one of ``keys`` (cached video keys) the way labels are."""
    from avpipe.fusion.data import InMemoryBanks, TrackRef, load_bank
    from avpipe.fusion.labels import LabelError, LabelTrack, match_videos, source_video_stem
    from avpipe.fusion.persons import person_side
    from avpipe.fusion.predict import _model_and_stats
    from avpipe.fusion.segments import plan_for
    from avpipe.fusion.source import CacheSource
    from avpipe.fusion.train import predict_provider, resolve_device

    dev = resolve_device(device)
    run, cfg, model, stats, ck = _model_and_stats(run_path, dev)
    fps = {m: (d["stage"], d["fingerprint"]) for m, d in cfg.resolved_features.items()}
    src = source if source is not None else CacheSource(cache or cfg.cache)

    def predict(name: str) -> np.ndarray:
        probe = LabelTrack(name=name, video_stem=source_video_stem(name), values=np.zeros((0, 2), np.float32))
        try:
            key = match_videos([probe], keys).get(name)
        except LabelError as e:
            raise LookupError(str(e)) from e
        if key is None:
            raise LookupError(f"no video named {source_video_stem(name)!r} among the predicted videos")
        bank = load_bank(src, fps, [TrackRef(name, key, None, person_side(name))], device=dev,
                         dtype=cfg.feature_dtype)
        bank.set_stats(stats)
        preds, _, _ = predict_provider(model, InMemoryBanks(bank), ck["window"], int(cfg.eval_hop or cfg.hop),
                                       int(cfg.batch_size or 32) * 2, segments=plan_for(cfg, src, [key]))
        return preds[name]

    return predict
