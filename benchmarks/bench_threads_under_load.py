"""Torch threads when other processes keep the cores busy: the faces stage with 1 thread and with
every core's worth of threads, side by side, with ``--busy`` spinning processes beside it.

Why: the default thread count (``avpipe/pipeline/threads.py``) leaves out the cores other
processes keep busy; this measures what an oversubscribed intra-op pool costs.

    .venv/bin/python benchmarks/bench_threads_under_load.py --busy 2 --frames 400 --repeats 3
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spin(stop) -> None:  # a process that keeps one core busy until told to stop
    while not stop.is_set():
        pass


def _time_faces(path: Path, frames: int, threads: int) -> float:
    from avpipe.extractors.faces import Faces, FacesConfig
    from avpipe.extractors.media import iter_frames
    from avpipe.pipeline.stage import Runtime
    from avpipe.pipeline.threads import apply_torch_threads

    def limited():
        for i, f in enumerate(iter_frames(path)):
            if i >= frames:
                return
            yield f

    st = Faces(FacesConfig(), Runtime(device="cpu", num_threads=threads))
    apply_torch_threads(threads, import_torch=True)  # what the runner does before a task
    st.ensure_loaded()
    t0 = time.perf_counter()
    st.process(limited(), frames)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--busy", type=int, default=2, help="spinning processes beside the measured one")
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--video", default=str(REPO / "tests/fixtures/media/talking_head.mp4"))
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        res: dict[int, list[float]] = {1: [], cores: []}
        for _ in range(args.repeats):
            for t in res:  # interleaved: both settings see the same conditions
                res[t].append(_time_faces(Path(args.video), args.frames, t))
    finally:
        stop.set()
        for p in spinners:
            p.join(timeout=5)
    one, many = statistics.median(res[1]), statistics.median(res[cores])
    print(f"{cores} cores, {args.busy} busy processes beside, faces on {args.frames} frames, median of {args.repeats}")
    print(f"1 thread:  {one:.1f} s")
    print(f"{cores} threads: {many:.1f} s  ({many / one:.2f}x the 1-thread time)")


if __name__ == "__main__":
    main()
