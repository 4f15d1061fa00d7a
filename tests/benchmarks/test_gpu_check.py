"""benchmarks/gpu_check.sh works before GPU time is spent: its CPU dry run, end to end.

The lent GPU machine gives a few minutes for one prepared command; a script that breaks there
wastes them. The dry run goes through every part (tests, cache, train, extract) at tiny sizes on
the CPU, through the same shell wrapper, and the JSON it writes is checked here.
"""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module(name: str = "gpu_check"):
    """A module of benchmarks/ (not a package: the scripts import each other by name)."""
    bench = str(ROOT / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def test_tiled_bank_is_whole_copies_with_the_sentinel_last():
    import torch

    from avpipe.fusion.data import FeatureBank
    from avpipe.fusion.windows import make_windows

    gc = _module("gpu_check_train")
    lengths = [5, 7]
    n = sum(lengths)
    x = torch.arange(n + 1, dtype=torch.float32).unsqueeze(1)
    x[-1] = 0
    y = torch.rand(n + 1, 2)
    y[-1] = -5
    yv = torch.ones(n + 1, dtype=torch.bool)
    yv[-1] = False
    bank = FeatureBank(names=["a", "b"], videos=["a", "b"], x={"visual": x},
                       valid={"visual": yv.clone()}, y=y, y_valid=yv, offsets=torch.tensor([0, 5, 12]))
    t = gc.tile_bank(bank, 36)
    assert t.n_rows == 36 and t.offsets.tolist() == [0, 5, 12, 17, 24, 29, 36]
    assert t.x["visual"].shape == (37, 1) and t.x["visual"][-1].item() == 0 and not t.y_valid[-1]
    assert torch.equal(t.x["visual"][12:24], x[:12]) and torch.equal(t.y[24:36], y[:12])
    w1 = make_windows(bank.offsets, 4, 2, bank.y_valid, require_labels=True)
    w3 = make_windows(t.offsets, 4, 2, t.y_valid, require_labels=True)
    assert len(w3) == 3 * len(w1)  # the epoch's windows scale with the copies
    sub = gc.bank_subset(t, ("visual",))
    assert sub.x["visual"] is t.x["visual"]


def test_cuda_marked_tests_are_found():
    files = _module().cuda_test_files()
    assert "tests/fusion/test_cuda.py" in files and "tests/extractors/test_cuda_extract.py" in files
    assert "tests/extractors/test_logmel.py" in files


def test_refuses_cuda_without_a_device(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cuda", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--dry-run" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--dry-run", "--no-install",
                        "--python", sys.executable, "--out", str(out), "--data", str(tmp_path / "data"),
                        "--budget-s", "3000"], cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").is_file() and (out / "gpu_check.md").is_file()
    p = d["parts"]
    assert d["meta"]["dry_run"] and all(p[k]["status"] == "done" for k in ("env", "tests", "cache", "train",
                                                                           "extract")), {k: v.get("status") for k, v in p.items()}
    # every CUDA-marked test was collected and skipped (no CUDA here), none failed
    c = p["tests"]["counts"]
    assert c["skipped"] >= 10 and c["failure"] == c["error"] == c["passed"] == 0, c
    rows = {(x["model"], x["precision"]): x for x in p["train"]["rows"]}
    models = ("jca", "rja", "rjcma", "dca", "maven")
    assert set(rows) == {(m, q) for m in models for q in ("fp32", "bf16")}  # fp16 autocast is CUDA-only
    assert sum("fp16 autocast is CUDA-only" in s for s in p["train"]["skipped"]) == len(models)
    for (m, q), x in rows.items():
        assert x["windows_s"] > 0 and math.isfinite(x["train_epoch_s_projected"]) and math.isfinite(x["val_ccc"])
        assert x["epoch_frames"] == p["train"]["epoch_frames"] and x["steps"] >= 1
        assert x["autocast"] == ("bfloat16" if q == "bf16" else "off")
        if q != "fp32":
            assert "fp32_speedup" in x and "ccc_delta_vs_fp32" in x
    assert p["train"]["epoch_frames"] >= 5000 and p["train"]["epoch_frames"] > p["train"]["train_frames"]
    assert len(p["train"]["first_losses"]) == 5 and all(f["ok"] for f in p["train"]["first_losses"])
    ex = p["extract"]
    assert all(ex["frames_per_s"][k] > 0 for k in ("decode", "faces_frames", "faces_file", "mtcnn_batched",
                                                    "visual_facenet"))
    assert ex["clips"][0]["face_rows"] > 0 and ex["projection"]["hours"] > 0
    assert ex["vs_cpu"]["faces"]["ok"] and ex["vs_cpu"]["visual_facenet"]["ok"]
