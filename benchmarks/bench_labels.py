"""Peak memory of reading a large label CSV (issue 19: a 280 MB label file was OOM-killed).

Writes a CSV of ``--rows`` rows (``video,frame,valence,arousal``; 500 videos) and reads it with
:func:`avpipe.fusion.labels.load_csv` in a fresh process per repeat, printing the peak RSS growth
(ru_maxrss after minus before) and the time. Run from a checkout; ``PYTHONPATH`` chooses the code.

    PYTHONPATH=$PWD python benchmarks/bench_labels.py --rows 2000000   # an absolute PYTHONPATH
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
from avpipe.fusion.labels import load_csv
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
tracks = load_csv(sys.argv[1])
dt = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(tracks), sum(len(x.values) for x in tracks), (after - before) / 1024, dt)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "labels.csv"
        per = args.rows // 500
        with open(p, "w") as fh:
            fh.write("video,frame,valence,arousal\n")
            for v in range(500):
                for f in range(per):
                    fh.write(f"batch1/video_{v:04d}.mp4,{f},0.{f % 97:02d},-0.{f % 89:02d}\n")
        size_mb = p.stat().st_size / 2**20
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, str(p)], capture_output=True, text=True, check=True,
                                 cwd=d)  # not the caller's folder: -c puts it first on sys.path
            runs.append(out.stdout.split())
        mem = sorted(float(r[2]) for r in runs)[len(runs) // 2]
        sec = sorted(float(r[3]) for r in runs)[len(runs) // 2]
        print(f"{args.rows} rows, {size_mb:.0f} MiB CSV: {runs[0][0]} tracks; peak RSS growth "
              f"{mem:.0f} MiB, {sec:.1f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
