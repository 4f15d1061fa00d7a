"""The GPU check: CUDA tests, per-model training epochs at three precisions, faces/visual speed.

What ``benchmarks/gpu_check.sh`` runs once the carried wheels are installed. Written for one lent
GPU machine and a fixed device budget, so every part is time-capped (``--budget-s``), the JSON is
rewritten after every measurement, and a part that fails records its error and the next part
still runs: whatever finished before the budget or a crash is in ``$OUT/gpu_check.json``.

Parts, in order (``--parts`` picks a subset):

* ``env``     torch/CUDA/device facts and the versions of the carried packages.
* ``tests``   the CUDA-marked tests (``pytest -m cuda`` on the files that use the marker).
* ``cache``   a synthetic Aff-Wild2-shaped cache through the store (``avpipe.fusion.synthetic``,
  as ``make_synthetic_cache.py`` writes it) at ``--scale`` of the 594 videos.
* ``train``   the fraction's train split loaded as ``avpipe train`` loads it (HDF5 → bank on the
  device, normalised), then tiled on the device to ``--epoch-frames`` rows (default: the
  2,312,912 train frames of the full-size synthetic split), so the window count and the bank's
  memory are an Aff-Wild2 epoch's. For each model (jca, rja, rjcma, dca, maven at their published
  settings) and each precision (fp32, fp16 and bf16 autocast): ``train_epoch`` of the trainer on
  ``--steps`` batches after a warm-up → windows/s, the epoch seconds this projects (train windows
  ÷ windows/s), peak GPU memory, and the validation CCC on the fraction's validation split (fixed
  by the seed) against fp32's after the same steps from the same initial weights. JCA also runs
  one whole epoch when the budget allows. First training losses (fp32, dropout off: the CPU and
  the GPU draw different dropout masks) are compared with the CPU's.
* ``extract`` 1280×720 H.264 clips made from the committed talking-head clip; decode alone;
  the ``faces`` stage (key frames + window-cascade tracking, as extraction runs it) on decoded
  frames and from the file (decode included, overlapped by its prefetch thread); MTCNN's full
  cascade batched across ``--faces-batch`` frames; the FaceNet architecture (InceptionResnetV1,
  random weights: the same arithmetic as the real ones, which are not on the machine) on the
  crops, and ``dlib-torch`` when its weights file is found. Rows and embeddings are compared
  with the CPU's on the first ``--ref-frames`` frames. Projects the wall time of 2.8 M frames
  through faces + visual on this one device.

Modules: this one runs the parts (env, tests, cache) and writes the summary;
``gpu_check_train.py`` and ``gpu_check_extract.py`` are the two measuring parts and
``gpu_check_common.py`` what they share (sizes, budget, report).

``--dry-run`` shrinks every size (CPU, a minute or two) so the script is known to work before
device time is spent; tests/benchmarks/test_gpu_check.py runs it.

    python benchmarks/gpu_check.py --device cuda --out $OUT --budget-s 300
    python benchmarks/gpu_check.py --device cpu --dry-run --out /tmp/gpu_dry
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the parts' modules, also when loaded by path

from gpu_check_common import (AFFWILD2_FRAMES, AFFWILD2_VIDEOS, DRY, EPOCH_GOAL_S, MODELS, PARTS,  # noqa: E402
                              PRECISIONS, ROOT, Budget, Report, Sizes, gib)
from gpu_check_extract import part_extract  # noqa: E402
from gpu_check_train import part_train  # noqa: E402


# ----------------------------------------------------------------------------- env
def part_env(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                           "cpus": os.cpu_count(), "device": a.device}
    if torch.cuda.is_available():
        i = torch.device(a.device).index or 0 if a.device.startswith("cuda") else 0
        p = torch.cuda.get_device_properties(i)
        out.update(device_name=p.name, capability=f"{p.major}.{p.minor}", device_memory=int(p.total_memory),
                   cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32)
    pk = {}
    for name in ("avpipe", "av", "facenet-pytorch", "pydantic", "pydantic-core", "numpy", "h5py",
                 "opencv-python-headless", "opencv-python", "torchvision", "pytest"):
        try:
            pk[name] = md.version(name)
        except md.PackageNotFoundError:
            pk[name] = None
    out["packages"] = pk
    return out


# ----------------------------------------------------------------------------- tests
def cuda_test_files() -> list[str]:
    """Test files that use the ``cuda`` marker (pytest then selects the marked tests in them):
    only those are collected, so test modules needing packages the GPU machine lacks do not
    stop the run."""
    files = []
    for p in sorted((ROOT / "tests").rglob("test_*.py")):
        if "pytest.mark.cuda" in p.read_text(errors="replace"):
            files.append(str(p.relative_to(ROOT)))
    return files


def part_tests(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    files = cuda_test_files()
    xml = Path(a.out) / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *files]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=max(10.0, budget.left(a.tests_until)))
        rc, tail = r.returncode, (r.stdout + r.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = None, f"timed out after {e.timeout:.0f}s"
    out: dict[str, Any] = {"files": files, "exit_code": rc, "seconds": time.perf_counter() - t, "output_tail": tail}
    if xml.is_file():
        cases = []
        for tc in ET.parse(xml).getroot().iter("testcase"):
            outcome, msg = "passed", ""
            for kind in ("failure", "error", "skipped"):
                el = tc.find(kind)
                if el is not None:
                    outcome, msg = kind, (el.get("message") or "")[:300]
            cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome, "message": msg})
        out["cases"] = cases
        out["counts"] = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    return out


# ----------------------------------------------------------------------------- cache
def part_cache(a: argparse.Namespace, sizes: Sizes, rep: Report, budget: Budget) -> dict[str, Any]:
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus

    data = Path(a.data)
    mean = sizes.video_frames or AFFWILD2_FRAMES / AFFWILD2_VIDEOS
    n = max(4, round(AFFWILD2_VIDEOS * sizes.scale))
    marker = data / "built.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("videos") != n or info.get("mean_frames") != mean:
            raise RuntimeError(f"--data {data} holds a cache of {info.get('videos')} videos, not the {n} asked "
                               f"for; give another --data folder")
        return {**info, "reused": True}
    if (data / "cache").exists() and getattr(a, "own_data", False):  # our temp folder, left by a killed run
        import shutil

        shutil.rmtree(data / "cache")
        shutil.rmtree(data / "labels", ignore_errors=True)
    elif (data / "cache").exists():
        raise RuntimeError(f"--data {data} has a cache/ that this script did not finish; remove it or give "
                           f"another --data folder")
    spec = SyntheticSpec(n_videos=n, min_frames=int(mean * 0.4), max_frames=int(mean * 1.6), dtype="float16",
                         val_fraction=76 / 432, seed=0, shard_size=16)
    t = time.perf_counter()
    make_corpus(data / "cache", data / "labels", spec)
    du = sum(p.stat().st_size for p in (data / "cache").rglob("*") if p.is_file())
    info = {"videos": n, "scale": sizes.scale, "mean_frames": mean, "seconds": time.perf_counter() - t,
            "disk_bytes": du, "path": str(data)}
    marker.write_text(json.dumps(info))
    return info


# ----------------------------------------------------------------------------- summary
def summary_lines(data: dict[str, Any]) -> list[str]:
    """A short markdown summary of whatever ran (also printed at the end)."""
    p = data["parts"]
    env = p.get("env", {})
    lines = [f"device: {env.get('device_name') or env.get('device')} (torch {env.get('torch')}, CUDA "
             f"{env.get('torch_cuda')}), budget {data['meta']['budget_s']:.0f}s, dry run: {data['meta']['dry_run']}"]
    t = p.get("tests", {})
    if "counts" in t:
        lines.append(f"CUDA tests: {t['counts']}")
    tr = p.get("train", {})
    if tr.get("rows"):
        lines += ["", f"epoch of {tr['epoch_frames']:,} frames (tiled from {tr['train_frames']:,}); goal "
                      f"{EPOCH_GOAL_S:.0f}s for jca", "",
                  "| model | precision | batch | windows/s | epoch s (projected) | peak GiB (of which bank) | val CCC "
                  "| vs fp32 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in tr["rows"]:
            vs = (f"{r['fp32_speedup']:.2f}x, ΔCCC {r['ccc_delta_vs_fp32']:+.3f}" if "fp32_speedup" in r else "")
            lines.append(f"| {r['model']} | {r['precision']} ({r['autocast']}) | {r['batch']} | "
                         f"{r['windows_s']:.1f} | {r['train_epoch_s_projected']:.1f} | "
                         f"{gib(r['peak_memory'])} ({gib(r['resident_before'])}) | {r['val_ccc']:.3f} | {vs} |")
        for f in tr.get("full_epochs", []):
            lines.append(f"whole jca epoch ({f['precision']}): {f['train_epoch_s']:.1f}s, {f['windows']:,} windows")
        for f in tr.get("first_losses", []):
            lines.append(f"first fp32 losses {f['model']}: device vs cpu max rel diff {f['max_rel_diff']:.2e} "
                         f"({'ok' if f['ok'] else 'NOT ok'})")
    ex = p.get("extract", {})
    if ex.get("frames_per_s"):
        f = ex["frames_per_s"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        lines += ["", "| stage | frames/s |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in f.items()]
        if "projection" in ex:
            pr = ex["projection"]
            lines.append(f"2.8 M frames through faces + visual: {pr['hours']:.2f} h (goal {pr['goal_hours']:.0f} h)")
        if "projection_batched_mtcnn" in ex:
            pr = ex["projection_batched_mtcnn"]
            lines.append(f"the same with batched full-cascade MTCNN, decode not overlapped: {pr['hours']:.2f} h")
        if "vs_cpu" in ex:
            lines.append(f"device vs CPU: {json.dumps(ex['vs_cpu'])}")
    for name, part in p.items():
        for what in part.get("skipped", []) if isinstance(part.get("skipped"), list) else []:
            lines.append(f"{name}: skipped {what}")
        for what in part.get("errors", []) if isinstance(part.get("errors"), list) else []:
            lines.append(f"{name}: error {what}")
        if part.get("error"):
            lines.append(f"{name}: ERROR {part['error']}")
    return lines


# ----------------------------------------------------------------------------- main
RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {"env": part_env, "tests": part_tests, "cache": part_cache,
                                                      "train": part_train, "extract": part_extract}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks/out/gpu_check"),
                    help="folder for gpu_check.json, the test report and the clips (default $OUT)")
    ap.add_argument("--data", default=None, help="synthetic cache folder (default OUT/../ a temp folder "
                                                 "outside OUT, so the cache is not carried back)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes: a CPU run of every part in a minute or two")
    ap.add_argument("--budget-s", type=float, default=270.0, help="wall-clock budget of the whole run (default 270: "
                                                                  "two runs and a start-up fit the 15 device minutes)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--scale", type=float, default=None, help="fraction of Aff-Wild2's videos in the cache")
    ap.add_argument("--epoch-frames", type=int, default=None, help="rows of the tiled training bank")
    ap.add_argument("--steps", type=int, default=None, help="timed batches per model and precision")
    ap.add_argument("--clip-seconds", type=float, default=None)
    ap.add_argument("--clips", type=int, default=None)
    # each part may run until this fraction of the budget has elapsed
    ap.add_argument("--tests-until", type=float, default=0.25, help=argparse.SUPPRESS)
    ap.add_argument("--train-until", type=float, default=0.62, help=argparse.SUPPRESS)
    ap.add_argument("--extract-until", type=float, default=0.97, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sizes = dataclasses.replace(DRY) if a.dry_run else Sizes()
    for k, v in (("scale", a.scale), ("epoch_frames", a.epoch_frames), ("steps", a.steps),
                 ("clip_seconds", a.clip_seconds), ("clips", a.clips)):
        if v is not None:
            setattr(sizes, k, v)
    parts = [x for x in a.parts.split(",") if x]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        ap.error(f"--parts: unknown {bad}; choose from {','.join(PARTS)}")
    a.out = str(Path(a.out).absolute())
    a.own_data = a.data is None
    if a.data is None:
        import tempfile

        a.data = str(Path(tempfile.gettempdir()) / f"avpipe_gpu_check_cache_{sizes.scale:g}")
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {a.device} but torch sees no CUDA device; use --device cpu --dry-run to "
              "check the script on a CPU", file=sys.stderr)
        return 2
    budget = Budget(a.budget_s)
    rep = Report(Path(a.out), {"argv": sys.argv[1:], "device": a.device, "dry_run": a.dry_run,
                               "budget_s": a.budget_s, "sizes": dataclasses.asdict(sizes), "data": a.data,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    failed = False
    skip: set[str] = set()
    for name in parts:
        if name in skip:
            rep.part(name).update(status="skipped", reason="no cache")
            continue
        rep.log(f"part {name} ({budget.elapsed():.0f}s of {budget.total:.0f}s used)")
        t = time.perf_counter()
        try:
            r = RUNNERS[name](a, sizes, rep, budget)
            part = rep.part(name)
            part.update(r)
            part.setdefault("status", "done")
            if part["status"] == "running":
                part["status"] = "done"
        except Exception as e:  # noqa: BLE001 - the next part still runs; the JSON says what broke
            failed = True
            part = rep.part(name)
            part.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
            rep.log(f"part {name} failed:\n{traceback.format_exc()}")
            if name == "cache":
                rep.log("no cache: skipping train")
                skip.add("train")
        rep.part(name)["seconds"] = time.perf_counter() - t
        rep.save()
    rep.data["meta"]["elapsed_s"] = budget.elapsed()
    rep.data["summary"] = summary_lines(rep.data)
    rep.save()
    (Path(a.out) / "gpu_check.md").write_text("\n".join(rep.data["summary"]) + "\n")
    print("\n".join(rep.data["summary"]), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
