"""Six runs as one sweep vs six separate ``avpipe train`` processes: wall-time ratio.

    .venv/bin/python benchmarks/make_synthetic_cache.py --out benchmarks/out/syn_small --scale 0.01
    .venv/bin/python benchmarks/bench_sweep.py --data benchmarks/out/syn_small

Both sides run the same six cells (3 models × 2 seeds, same options, same epochs) through the
real CLI in fresh interpreters, one after the other on an otherwise idle machine: the separate
side pays interpreter start, imports and the bank load (read + normalise) six times; the sweep
pays them once (``bank loads`` in its summary). Prints both walls, the ratio and the per-run
metrics of both sides (they must agree: same seeds, same code path).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="benchmarks/out/syn_small", help="make_synthetic_cache.py output")
    ap.add_argument("--models", default="jca,audio,visual")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--hop", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads on both sides")
    a = ap.parse_args()
    data = Path(a.data)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(a.threads),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    common = ["--labels", str(data / "labels"), "--cache", str(data / "cache"), "--epochs", str(a.epochs),
              "--device", a.device]
    models, seeds = a.models.split(","), [int(s) for s in a.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for m in models:
            for s in seeds:
                subprocess.run([sys.executable, "-m", "avpipe", "train", "--fusion", m, *common, "--seed", str(s),
                                "--window", str(a.window), "--hop", str(a.hop),
                                "--out", f"{tmp}/separate/{m}-s{s}"], env=env, check=True, capture_output=True)
        separate = time.perf_counter() - t
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "avpipe", "sweep", *common, "--fusion", a.models,
                            "--seeds", a.seeds, "--set", f"window={a.window}", "--set", f"hop={a.hop}",
                            "--out", f"{tmp}/sweep"], env=env, check=True, capture_output=True, text=True)
        sweep = time.perf_counter() - t
        loads = next((ln for ln in p.stdout.splitlines() if "bank loads" in ln), "")
        print(f"{len(models) * len(seeds)} runs, {a.epochs} epochs each, device {a.device}, {a.threads} thread(s)")
        print(f"separate `avpipe train` processes: {separate:8.2f} s")
        print(f"one `avpipe sweep`:                {sweep:8.2f} s   ({loads.strip()})")
        print(f"ratio sweep / separate:            {sweep / separate:8.3f}")
        for m in models:
            for s in seeds:
                a_ = json.loads(Path(f"{tmp}/separate/{m}-s{s}/summary.json").read_text())["best"]["val_ccc_mean"]
                cell = next(Path(f"{tmp}/sweep").glob(f"{m}-*s{s}-*"))
                b_ = json.loads((cell / "summary.json").read_text())["best"]["val_ccc_mean"]
                print(f"  {m:8s} seed {s}: val CCC mean separate {a_:.4f}  sweep {b_:.4f}")


if __name__ == "__main__":
    main()
