"""The trainer's data path on a whole (synthetic) Aff-Wild2-sized cache: memory and speed.

Three measurements, each in its own subprocess so each peak RSS (``os.wait4`` ru_maxrss, and the
child's own VmHWM at checkpoints) belongs to that step alone:

* ``load``  - ``load_bank`` of the train split exactly as ``avpipe train`` prepares it (labels →
  splits → fingerprints through ``avpipe.fusion.prepare``; ``--bank-fusion`` picks the modalities, default
  rjcma = visual+audio+text, the largest bank), ``feature_dtype`` float16: bank bytes, load wall
  time, peak RSS, peak minus the RSS before loading (torch and avpipe imported), and that over the
  bank; then the training statistics and the in-place normalisation, and the peak after them.
* ``datapath`` - samples/s of the bank path vs the naive per-window HDF5 Dataset + DataLoader
  (``bench_datapath.measure``) at each ``--threads`` (torch threads; the naive DataLoader gets as
  many workers unless ``--workers``), median over ``--repeats``, and the ratio. Timings: run on a
  quiet machine.
* ``train`` - one epoch through the real CLI (``python -m avpipe train --fusion jca --epochs 1
  --num-threads N``): the run's own epoch time (metrics.csv ``epoch_s``/``train_s``), its load
  time, the whole process's wall time and peak RSS.

Prints one markdown table; ``--json`` writes the raw figures.

    .venv/bin/python benchmarks/make_synthetic_cache.py --out /data/syn_full --scale 1
    .venv/bin/python benchmarks/bench_fullscale.py --data /data/syn_full --threads 1 2 --json fullscale.json
    .venv/bin/python benchmarks/bench_fullscale.py --data /data/syn_full --parts load,train   # memory only
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("load", "datapath", "train")
GIB = float(1 << 30)


def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (VmRSS: resident now, VmHWM: peak resident)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_bytes() -> tuple[int, int]:
    """(resident now, peak resident) of this process in bytes."""
    return proc_status_kib("VmRSS") * 1024, proc_status_kib("VmHWM") * 1024


# ----------------------------------------------------------------------------- children
def child_load(a: argparse.Namespace) -> dict:
    """``load_bank`` of the train split as ``avpipe train`` does it, then stats + normalisation."""
    import torch

    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.data import compute_stats, load_bank
    from avpipe.fusion.prepare import open_source, prepare

    torch.set_num_threads(a.threads[0])
    cfg = TrainConfig(fusion=a.bank_fusion, labels=f"{a.data}/labels", cache=f"{a.data}/cache",
                      feature_dtype="float16")
    source = open_source(cfg)
    t = time.perf_counter()
    prep = prepare(cfg, source)
    prepare_s = time.perf_counter() - t
    base, base_peak = rss_bytes()
    t = time.perf_counter()
    bank = load_bank(source, prep.fingerprints, prep.train, device="cpu", dtype=cfg.feature_dtype,
                     tolerance=cfg.label_tolerance)
    load_s = time.perf_counter() - t
    after, load_peak = rss_bytes()
    x_bytes = bank.nbytes()
    all_bytes = x_bytes + sum(t.element_size() * t.numel() for t in
                              [*bank.valid.values(), bank.y, bank.y_valid, bank.offsets])
    t = time.perf_counter()
    bank.set_stats(compute_stats([bank]))
    stats_s = time.perf_counter() - t
    _, stats_peak = rss_bytes()
    return {"fusion": a.bank_fusion, "modalities": {m: list(v) for m, v in prep.fingerprints.items()},
            "dims": bank.dims, "train_videos": len(prep.train), "val_videos": len(prep.val),
            "frames": bank.n_rows, "bank_x_bytes": x_bytes, "bank_bytes": all_bytes,
            "prepare_s": prepare_s, "load_s": load_s, "stats_s": stats_s,
            "rss_before": base, "peak_before": base_peak, "rss_after_load": after,
            "peak_load": load_peak, "peak_after_stats": stats_peak,
            "load_ratio": (load_peak - base) / all_bytes, "stats_ratio": (stats_peak - base) / all_bytes}


def child_datapath(a: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_datapath import measure

    n = a.threads[0]
    torch.set_num_threads(n)
    workers = a.workers if a.workers is not None else n
    r = measure(a.data, batches=a.batches, repeats=a.repeats, workers=workers, dtype="float16",
                log=lambda s: print(s, file=sys.stderr, flush=True))
    r["threads"] = n
    return r


# ----------------------------------------------------------------------------- parent
def run_child(args: list[str]) -> tuple[dict, float, float]:
    """(child's JSON result, peak RSS bytes from wait4, wall seconds) of this script as a child."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    return run_measured(cmd, parse_json=True)


def run_measured(cmd: list[str], parse_json: bool = False) -> tuple[dict, float, float]:
    """Run ``cmd``; (result, its peak RSS in bytes from ``os.wait4``, wall seconds). stderr goes to a
    temp file so that reading stdout to the end cannot deadlock, and the process is reaped by
    ``wait4`` itself (not ``Popen.wait``), whose rusage is this child's alone."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=errf)
        out = p.stdout.read() if p.stdout else b""  # type: ignore[union-attr]
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}):\n{err.decode(errors='replace')[-4000:]}")
    res = json.loads(out.decode().strip().splitlines()[-1]) if parse_json else {"stdout": out.decode()[-2000:]}
    res["stderr_tail"] = err.decode(errors="replace")[-1500:]
    return res, ru.ru_maxrss * 1024.0, wall


def train_epoch(a: argparse.Namespace, threads: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "avpipe", "train", "--fusion", a.train_fusion, "--cache", f"{a.data}/cache",
           "--labels", f"{a.data}/labels", "--epochs", "1", "--num-threads", str(threads), "--device", "cpu",
           "--out", str(out), "--overwrite"]
    res, peak, wall = run_measured(cmd)
    with open(out / "metrics.csv") as fh:
        row = list(csv.DictReader(fh))[-1]
    summary = json.loads((out / "summary.json").read_text())
    return {"threads": threads, "fusion": a.train_fusion, "epoch_s": float(row["epoch_s"]),
            "train_s": float(row["train_s"]), "windows": int(row["windows"]), "load_s": summary.get("load_s"),
            "val_ccc_mean": float(row["val_ccc_mean"]), "process_wall_s": wall, "peak_rss": peak,
            "log_tail": res["stderr_tail"] + res["stdout"]}


def machine() -> dict:
    load = os.getloadavg()
    mem = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            k, v = line.split(":", 1)
            if k in ("MemTotal", "MemAvailable"):
                mem[k] = int(v.split()[0]) * 1024
    return {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "loadavg": load,
            "mem_total": mem.get("MemTotal"), "mem_available": mem.get("MemAvailable"),
            "python": platform.python_version()}


def gib(b: float) -> str:
    return f"{b / GIB:.2f} GiB"


def table(res: dict) -> str:
    """One markdown table of whatever parts ran."""
    m = res["machine"]
    rows = [("machine", f"{m['affinity']} cores, {gib(m['mem_total'])} RAM, load avg before {m['loadavg'][0]:.2f}")]
    if "load" in res:
        r = res["load"]
        split = (f"{r['train_videos']} videos ({r['val_videos']} val), {r['frames']:,} frames, "
                 f"{'+'.join(r['modalities'])} {r['dims']}")
        after_load = (f"{gib(r['peak_load'])} (+{gib(r['peak_load'] - r['rss_before'])} = "
                      f"**{r['load_ratio']:.3f}x** the bank)")
        after_stats = (f"{gib(r['peak_after_stats'])} (+{gib(r['peak_after_stats'] - r['rss_before'])} = "
                       f"**{r['stats_ratio']:.3f}x** the bank; {r['stats_s']:.1f} s)")
        rows += [("train split", split),
                 ("bank (float16 features + masks/labels)", f"{gib(r['bank_bytes'])} ({gib(r['bank_x_bytes'])} features)"),
                 ("load_bank wall", f"{r['load_s']:.1f} s (prepare {r['prepare_s']:.1f} s)"),
                 ("RSS before load (imports)", gib(r["rss_before"])),
                 ("peak RSS after load_bank", after_load),
                 ("peak RSS after stats + normalise", after_stats),
                 ("load process peak RSS (wait4)", gib(r["wait4_peak"]))]
    for r in res.get("datapath", []):
        v = (f"bank {r['bank_median']:,.0f} vs naive {r['naive_median']:,.0f} samples/s = **{r['ratio']:.1f}x** "
             f"(median of {len(r['bank_samples_s'])}; peak RSS {gib(r['wait4_peak'])})")
        rows.append((f"data path, {r['threads']} thread(s), naive workers {r['workers']}", v))
    for r in res.get("train", []):
        v = (f"epoch {r['epoch_s']:.1f} s (train {r['train_s']:.1f} s, {r['windows']:,} windows), "
             f"load {r['load_s']:.1f} s, process {r['process_wall_s']:.1f} s, peak RSS **{gib(r['peak_rss'])}**")
        rows.append((f"{r['fusion']} epoch, --num-threads {r['threads']}", v))
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with cache/ and labels/ (make_synthetic_cache.py --out)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for datapath and train")
    ap.add_argument("--workers", type=int, default=None, help="naive DataLoader workers (default: = threads)")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bank-fusion", default="rjcma", help="model whose modalities the load step banks")
    ap.add_argument("--train-fusion", default="jca")
    ap.add_argument("--train-out", type=Path, default=None, help="run folder for the epoch (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=["load", "datapath"], default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        r = child_load(a) if a.child == "load" else child_datapath(a)
        print(json.dumps(r))
        return
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"--parts: unknown {bad}; choose from {','.join(PARTS)}")
    if not (Path(a.data) / "cache").is_dir() or not (Path(a.data) / "labels").is_dir():
        ap.error(f"--data {a.data}: needs cache/ and labels/ (benchmarks/make_synthetic_cache.py --out)")
    common = ["--data", str(a.data), "--batches", str(a.batches), "--repeats", str(a.repeats),
              "--bank-fusion", a.bank_fusion] + (["--workers", str(a.workers)] if a.workers is not None else [])
    res: dict = {"data": str(a.data), "machine": machine()}
    if "load" in parts:
        r, peak, wall = run_child(common + ["--child", "load", "--threads", str(a.threads[0])])
        r.update(wait4_peak=peak, process_wall_s=wall)
        res["load"] = r
        print(f"load: {r['frames']:,} frames, bank {r['bank_bytes'] / GIB:.2f} GiB, peak/bank {r['load_ratio']:.3f}, "
              f"after stats {r['stats_ratio']:.3f}", file=sys.stderr, flush=True)
    if "datapath" in parts:
        res["datapath"] = []
        for n in a.threads:
            r, peak, wall = run_child(common + ["--child", "datapath", "--threads", str(n)])
            r.update(wait4_peak=peak, process_wall_s=wall)
            res["datapath"].append(r)
            print(f"datapath {n} thread(s): ratio {r['ratio']:.1f}x", file=sys.stderr, flush=True)
    if "train" in parts:
        res["train"] = []
        for n in a.threads:
            with tempfile.TemporaryDirectory(prefix="avpipe_fullscale_") as tmp:
                out = (a.train_out / f"threads{n}") if a.train_out else Path(tmp) / "run"
                r = train_epoch(a, n, out)
            res["train"].append(r)
            print(f"train {n} thread(s): epoch {r['epoch_s']:.1f}s, peak RSS {r['peak_rss'] / GIB:.2f} GiB",
                  file=sys.stderr, flush=True)
    res["machine_after"] = machine()
    print(table(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
