"""What the GPU check's parts share: sizes, the budget, the JSON report, device helpers, goals.

Split from ``gpu_check.py`` so the training and extraction parts (``gpu_check_train.py``,
``gpu_check_extract.py``) each stay one job; ``gpu_check.py`` runs them.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AFFWILD2_VIDEOS = 594
AFFWILD2_FRAMES = 2_800_000
# train frames of the full-size synthetic split (490 of 594 videos; BENCHMARKS.md, issue #11)
AFFWILD2_TRAIN_FRAMES = 2_312_912
EPOCH_GOAL_S = 30.0
EXTRACT_GOAL_S = 2 * 3600.0
MODELS = ("jca", "rja", "rjcma", "dca", "maven")
PRECISIONS = ("fp32", "fp16", "bf16")
AMP_OF = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}  # TrainConfig.amp for each precision
PARTS = ("env", "tests", "cache", "train", "extract")
LOSS_RTOL = 2e-3  # first fp32 losses, device vs CPU (TF32 convolutions round more coarsely)
CCC_TOL = 0.05  # |AMP CCC - fp32 CCC| after the same steps from the same weights
FACENET_TOL = 1e-3  # embeddings, device vs CPU (512-d, L2-normalised)
BOX_TOL_PX = 2.0  # faces rows (box, landmarks) device vs CPU, pixels at 720p


@dataclass
class Sizes:
    """Everything that differs between the device run and the CPU dry run."""

    scale: float = 0.05  # of Aff-Wild2's 594 videos in the synthetic cache
    video_frames: int | None = None  # mean frames per video (None: Aff-Wild2's, ≈ 4 714)
    epoch_frames: int = AFFWILD2_TRAIN_FRAMES  # rows of the tiled training bank
    steps: int = 30  # timed batches per model and precision
    warmup: int = 3
    step_cap_s: float = 20.0  # at most this long per model and precision
    batch_size: int | None = None  # None: each model's published batch
    loss_steps: int = 3  # first fp32 steps compared with the CPU
    loss_batch: int = 4
    clips: int = 2
    clip_seconds: float = 16.0
    clip_size: tuple[int, int] = (1280, 720)
    faces_batch: int = 32
    visual_batch: int = 256
    ref_frames: int = 100  # frames also run on the CPU for the feature comparison
    full_epoch: bool = True  # also one whole JCA epoch when the budget allows


DRY = Sizes(scale=0.01, video_frames=700, epoch_frames=6000, steps=1, warmup=1, step_cap_s=10.0, batch_size=2,
            loss_steps=2, loss_batch=2, clips=1, clip_seconds=1.2, clip_size=(320, 180), faces_batch=8,
            visual_batch=16, ref_frames=8, full_epoch=False)


# ----------------------------------------------------------------------------- bookkeeping
class Budget:
    """Wall-clock budget: each part may run until its share of the total has elapsed."""

    def __init__(self, seconds: float) -> None:
        self.total = float(seconds)
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, until: float = 1.0) -> float:
        """Seconds left before ``until`` (a fraction of the total) is reached."""
        return self.total * until - self.elapsed()


class Report:
    """The JSON result, rewritten (atomically) after every measurement, plus a log line each."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "parts": {}}
        out.mkdir(parents=True, exist_ok=True)
        self.save()

    def log(self, msg: str) -> None:
        print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def part(self, name: str) -> dict[str, Any]:
        return self.data["parts"].setdefault(name, {"status": "running"})

    def save(self) -> None:
        p = self.out / "gpu_check.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        os.replace(tmp, p)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: Any) -> int | None:
    """Peak bytes allocated by torch on the device since the last reset (None on CPU)."""
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t



def gib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"

