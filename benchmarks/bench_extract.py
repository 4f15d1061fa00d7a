"""Whole offline extraction against real time: today's code against an older revision, side by side.

A batch of ``--clips`` talking-head videos (640×360, 30 fps, ``--seconds`` each, a real face on
every frame and tiled real speech; each clip starts at a different offset, so they are different
files and the cache computes each) goes through

    python -m avpipe extract --videos CLIPS --cache FRESH --config configs/offline.toml \\
        --stages faces,visual,logmel,asr,text --jobs 2

once per code revision per repeat, revisions alternating, each run into a fresh cache, through the
real CLI in a fresh interpreter (what a user times). Each revision reads its *own*
``configs/offline.toml`` (the old one names the ``dlib`` visual backbone, today's ``dlib-torch``).
A warm-up run per revision on one short clip comes first and is not counted: it converts Whisper's
CTranslate2 files once (into the avpipe home, shared by both) and warms the page cache.

    .venv/bin/python benchmarks/bench_extract.py --old a6a7b30 --clips 4 --seconds 30 --repeats 3

Prints the median wall time, the real-time factor (seconds of video per wall second) and the
speed ratio; writes the raw figures as JSON (``--json``). Needs an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import export_revision, make_video  # noqa: E402


def make_clips(folder: Path, n: int, seconds: float, size: tuple[int, int] = (640, 360)) -> list[Path]:
    """``n`` different clips of ``seconds`` each (kept between runs: generating is not measured)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"talk_{i:02d}.mp4"
        if not p.exists():
            make_video(p, seconds / 60.0, faces=True, offset=37 * i + 5, size=size)
        out.append(p)
    return out


def merged(base: dict, extra: dict) -> dict:
    """``base`` with ``extra``'s keys set, tables merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_extract(code: Path, videos: Path, cache: Path, stages: str, jobs: int,
                threads: int | None, config: Path | None = None) -> tuple[float, str]:
    """Wall seconds of one ``extract`` process and its output (it must succeed); ``config``
    replaces the revision's own ``configs/offline.toml``."""
    env = dict(os.environ, PYTHONPATH=str(code), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    config = config or code / "configs" / "offline.toml"
    cmd = [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
           "--config", str(config), "--stages", stages, "--jobs", str(jobs),
           "--device", "cpu", "--no-progress"]
    if threads is not None:
        cmd += ["--num-threads", str(threads)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=str(code), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"extract failed under {code} (exit {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    return wall, p.stdout + p.stderr


def stage_seconds(out: str) -> dict[str, float]:
    """Per-stage wall seconds from an ``extract`` summary (its ``wall s`` column)."""
    got: dict[str, float] = {}
    head = None
    for ln in out.splitlines():
        cols = ln.split()
        if cols[:1] == ["stage"] and "wall" in cols:
            head = cols.index("wall")  # "wall s" is one column in two words
            continue
        if head is not None and len(cols) > head and cols[1].isdigit():
            got[cols[0]] = float(cols[head])
    return got


def video_seconds(clips: list[Path]) -> float:
    import av

    total = 0.0
    for c in clips:
        with av.open(str(c)) as f:
            s = f.streams.video[0]
            total += float(s.frames / s.average_rate) if s.frames else float(f.duration or 0) / 1e6
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="a6a7b30", help="git revision to compare with ('none': this tree only)")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--stages", default="faces,visual,logmel,asr,text")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--num-threads", type=int, default=None,
                    help="passed to today's code only (older revisions may not have the flag)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="640x360", help="clip size WxH (the talking head centred; "
                                                        "enlarged to the height of a taller canvas)")
    ap.add_argument("--media", type=Path, default=ROOT / "benchmarks" / "out" / "extract_media")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=TOML",
                    help="also run today's code with these TOML lines added to its offline config, "
                         "as variant NAME, merged table by table (e.g. 'onet=[stages.faces]\\ntrack_onet_inputs = 3' or "
                         "'dlib=[stages.visual]\\nbackbone = \"dlib-torch\"'); repeatable")
    args = ap.parse_args()

    size = tuple(int(v) for v in args.size.lower().split("x"))
    suffix = "" if size == (640, 360) else f"_{args.size}"
    clips = make_clips(args.media / f"{args.clips}x{args.seconds:g}s{suffix}", args.clips, args.seconds, size)
    warm = make_clips(args.media / "warmup", 1, 3.0)
    secs = video_seconds(clips)
    work = Path(tempfile.mkdtemp(prefix="avpipe-bench-extract-"))
    codes = {"new": ROOT}
    if args.old != "none":
        codes = {"old": export_revision(args.old, work / "old"), "new": ROOT}
    configs: dict[str, Path | None] = {n: None for n in codes}
    for spec in args.extra:
        name, _, lines = spec.partition("=")
        cfg = work / f"offline-{name}.json"  # merged, so a variant may change a table the preset has
        base = tomllib.loads((ROOT / "configs" / "offline.toml").read_text())
        cfg.write_text(json.dumps(merged(base, tomllib.loads(lines.replace("\\n", "\n"))), indent=1))
        codes[name], configs[name] = ROOT, cfg
    walls: dict[str, list[float]] = {n: [] for n in codes}
    splits: dict[str, list[dict[str, float]]] = {n: [] for n in codes}
    tails: dict[str, str] = {}
    try:
        for name, code in codes.items():
            run_extract(code, warm[0].parent, work / f"warm-{name}", args.stages, args.jobs,
                        args.num_threads if name != "old" else None, configs[name])
        for rep in range(args.repeats):
            order = list(codes) if rep % 2 == 0 else list(reversed(codes))
            for name in order:
                cache = work / f"cache-{name}-{rep}"
                wall, out = run_extract(codes[name], clips[0].parent, cache, args.stages, args.jobs,
                                        args.num_threads if name != "old" else None, configs[name])
                walls[name].append(wall)
                splits[name].append(stage_seconds(out))
                tails[name] = out
                print(f"rep {rep} {name:>3}: {wall:7.1f} s  ({secs / wall:.2f}x real time)", file=sys.stderr)
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.clips} clips x {args.seconds:g} s = {secs:.1f} s of {args.size} 30 fps video; stages "
          f"{args.stages}; --jobs {args.jobs}; median of {args.repeats}\n")
    print("| code | median wall (s) | runs (s) | x real time |")
    print("|---|---|---|---|")
    for name in codes:
        m = statistics.median(walls[name])
        print(f"| {name}{' (' + args.old + ')' if name == 'old' else ''} | {m:.1f} | "
              f"{', '.join(f'{w:.1f}' for w in walls[name])} | {secs / m:.2f} |")
    if "old" in codes:
        print(f"\nspeed-up new/old: {statistics.median(walls['old']) / statistics.median(walls['new']):.2f}x")
    for name in configs:
        if configs[name] is not None:
            print(f"speed-up {name}/new: {statistics.median(walls['new']) / statistics.median(walls[name]):.2f}x")
    split = [n for n in codes if splits[n] and all(splits[n])]  # older revisions print no split
    stages = [st for st in splits[split[0]][0] if st != "probe"] if split else []
    if stages:
        print("\nPer-stage wall seconds (median over repeats; stages run one after another over the batch):\n")
        print("| code | " + " | ".join(stages) + " |")
        print("|---|" + "---|" * len(stages))
        for name in split:
            med = [statistics.median(sp.get(st, 0.0) for sp in splits[name]) for st in stages]
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in med) + " |")
    for name, out in tails.items():
        lines = [ln for ln in out.splitlines() if re.search(r"\S", ln)]
        print(f"\n{name} run summary (last repeat):\n" + "\n".join("    " + ln for ln in lines[-12:]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "video_seconds": secs, "walls": walls, "stage_seconds": splits},
                                        indent=1))


if __name__ == "__main__":
    main()
