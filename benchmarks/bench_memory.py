"""Peak RSS per stage against video length, today's code against an older revision, side by side.

For each length (minutes) a 640×360, 30 fps video is generated once with PyAV (cheap content: a
moving gradient, or — when ``faces``/``visual`` are measured — the committed talking-head clip's
frames, cycled, so there is a face on every frame and every crop is stored; speech: that clip's
audio, tiled, so ``asr``/``text`` have words). Each code revision gets its own fresh cache; every stage then runs in its own
``python -m avpipe extract --stage NAME`` process (its prerequisites are already cached by the
previous process), so the peak RSS read for that process (``os.wait4``) is that stage's alone.
The old revision is exported with ``git archive`` into a temporary folder and run through
``PYTHONPATH`` (nothing is installed).

    .venv/bin/python benchmarks/bench_memory.py --minutes 2 8 16 60 --old main~1
    .venv/bin/python benchmarks/bench_memory.py --minutes 2 --stages logmel,text --old none
    .venv/bin/python benchmarks/bench_memory.py --minutes 2 8 --stages faces,visual --config offline

Prints one markdown table (median over ``--repeats``) and writes the raw figures as JSON
(``--json``). Long lengths take a while (encoding an hour, and Whisper on an hour of speech):
run them on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FPS = 30
SIZE = (640, 360)
SR = 16000


def face_frames(size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """The talking-head clip's frames, centred on a ``size`` canvas (a real face to detect); on a
    canvas taller than the clip the frames are first enlarged to the canvas height (720p: the face
    twice as large, as a 720p recording of the same shot would show it)."""
    import av
    import cv2

    w, h = size
    out = []
    with av.open(str(ROOT / "tests" / "fixtures" / "media" / "talking_head.mp4")) as c:
        for fr in c.decode(video=0):
            f = fr.to_ndarray(format="rgb24")
            if f.shape[0] < h:
                s = h / f.shape[0]
                f = cv2.resize(f, (int(round(f.shape[1] * s)), h), interpolation=cv2.INTER_LINEAR)
            f = f[:h, :w]
            canvas = np.zeros((h, w, 3), np.uint8)
            y, x = (h - f.shape[0]) // 2, (w - f.shape[1]) // 2
            canvas[y:y + f.shape[0], x:x + f.shape[1]] = f
            out.append(canvas)
    return out


def make_video(path: Path, minutes: float, faces: bool = False, offset: int = 0,
               size: tuple[int, int] = SIZE) -> Path:
    """A ``minutes`` long ``size`` (default 640×360) H.264 video with tiled speech (AAC), written in pieces; with
    ``faces`` the picture is the talking-head clip, cycled. ``offset`` starts the picture that many
    frames and the speech that many ~0.1 s steps later, so clips made with different offsets are
    different files (the cache would otherwise compute identical bytes once)."""
    import av

    sys.path.insert(0, str(ROOT))
    from avpipe.extractors.audio import decode_audio

    speech, _ = decode_audio(ROOT / "tests" / "fixtures" / "media" / "talking_head.mp4")
    assert speech is not None
    n_frames = int(round(minutes * 60 * FPS))
    n_samples = int(round(minutes * 60 * SR))
    w, h = size
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    frames = face_frames(size) if faces else [np.roll(base, 8 * i, axis=1) for i in range(FPS)]  # cycled
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "30"}
        a = out.add_stream("aac", rate=SR)
        a.layout = "mono"
        s = 0
        for i in range(n_frames):  # interleave: one video frame, then the audio up to its time
            for p in vs.encode(av.VideoFrame.from_ndarray(frames[(i + offset) % len(frames)], format="rgb24")):
                out.mux(p)
            until = min(n_samples, int((i + 1) * SR / FPS))
            while s + 1024 <= until or (until == n_samples and s < n_samples):
                k = min(1024, n_samples - s)
                chunk = np.take(speech, (np.arange(s, s + k) + offset * 1601) % len(speech)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = SR, s, Fraction(1, SR)
                for p in a.encode(af):
                    out.mux(p)
                s += k
        for st in (vs, a):
            for p in st.encode():
                out.mux(p)
    tmp.rename(path)
    return path


def stage_order(stages: str) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from avpipe.pipeline.stage import topological_order

    return topological_order([s for s in stages.split(",") if s])


def run_stage(code: Path, videos: Path, cache: Path, stage: str, device: str, jobs: int,
              config: Path | None = None) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one ``extract --stage`` process."""
    env = dict(os.environ, PYTHONPATH=str(code), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
           "--stage", stage, "--device", device, "--jobs", str(jobs), "--no-progress"]
    if config is not None:
        cmd += ["--config", str(config)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=str(code), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read() if p.stdout else b""  # type: ignore[union-attr]
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{stage} failed under {code} (exit {rc}):\n{out.decode(errors='replace')[-3000:]}")
    return ru.ru_maxrss / 1024.0, wall  # Linux: KiB


def export_revision(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[2, 8, 16, 60])
    ap.add_argument("--stages", default="logmel,text", help="stages to measure (plus what they need)")
    ap.add_argument("--old", default="none", help="git revision to compare with ('none': this tree only)")
    ap.add_argument("--config", type=Path, default=None,
                    help="pipeline config for every run (e.g. configs/offline.toml: dlib-torch visual)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--media", type=Path, default=ROOT / "benchmarks" / "out" / "memory_media",
                    help="where generated videos are kept between runs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep-cache", type=Path, default=None,
                    help="keep each run's cache under this folder and reuse it: a later call with "
                         "--stages visual then measures visual alone over the faces cached by an "
                         "earlier call (a stage already cached reads as a warm no-op)")
    args = ap.parse_args()

    order = stage_order(args.stages)
    work = Path(tempfile.mkdtemp(prefix="avpipe-bench-mem-"))
    codes = {"new": ROOT}
    if args.old != "none":
        codes = {"old": export_revision(args.old, work / "old"), "new": ROOT}
    raw: dict[str, dict] = {}
    try:
        for minutes in args.minutes:
            args.media.mkdir(parents=True, exist_ok=True)
            faces = bool({"faces", "visual"} & set(order))
            vid_dir = args.media / f"{minutes:g}min{'-face' if faces else ''}"
            video = vid_dir / "video.mp4"
            if not video.exists():
                vid_dir.mkdir(parents=True, exist_ok=True)
                t = time.perf_counter()
                make_video(video, minutes, faces)
                print(f"generated {video} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            for name, code in codes.items():
                for rep in range(args.repeats):
                    cache = (args.keep_cache or work) / f"cache-{name}-{minutes:g}-{rep}"
                    for st in order:
                        rss, wall = run_stage(code, vid_dir, cache, st, args.device, args.jobs,
                                              args.config.resolve() if args.config else None)
                        raw.setdefault(f"{minutes:g}", {}).setdefault(name, {}).setdefault(st, []).append(
                            {"rss_mib": rss, "wall_s": wall})
                        print(f"{minutes:g} min {name:>3} {st:<8} peak RSS {rss:7.0f} MiB  {wall:6.1f} s",
                              file=sys.stderr)
                    if args.keep_cache is None:
                        shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(xs: list[dict], k: str) -> float:
        return statistics.median(x[k] for x in xs)

    names = list(codes)
    head = "| minutes | stage | " + " | ".join(f"{n} peak RSS (MiB) | {n} wall (s)" for n in names)
    head += " | new/old RSS |" if "old" in codes else " |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(names) + ("old" in codes)))
    for minutes, by_code in raw.items():
        for st in order:
            cells = [f"{med(by_code[n][st], 'rss_mib'):.0f} | {med(by_code[n][st], 'wall_s'):.1f}" for n in names]
            ratio = (f" | {med(by_code['new'][st], 'rss_mib') / med(by_code['old'][st], 'rss_mib'):.2f}"
                     if "old" in codes else "")
            print(f"| {minutes} | {st} | " + " | ".join(cells) + ratio + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "raw": raw}, indent=1))


if __name__ == "__main__":
    main()
