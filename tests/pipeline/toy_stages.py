"""Small, fast stages for pipeline tests (registered on import; usable via AVPIPE_PLUGINS).

* ``toy_a`` (requires probe): per frame ``[t * scale, frame index]`` — config ``scale``.
* ``toy_b`` (requires toy_a): per frame the row sum of toy_a plus ``offset``.
* ``toy_slow`` (requires probe): like toy_a but sleeps ``$AVPIPE_TOY_SLEEP`` seconds per video
  (non-semantic, so not in the fingerprint) — for kill-at-random-time tests.
* ``toy_bad`` (requires probe): per-frame stage returning one row too few (must fail).
* ``toy_fail`` (requires probe): raises for videos whose key contains ``fail``.
* ``toy_load`` (requires probe): toy_a's rows, one video per task; its ``load`` appends
  ``toy_load.load <pid>`` to the file in its config's ``log`` (counts loads per worker process).
* ``toy_chunks`` (requires probe): toy_a's rows returned as :class:`RowChunks` of 3 rows;
  a video whose key contains ``$AVPIPE_TOY_KILL`` is SIGKILLed after its first chunk was
  written, one whose key contains ``short`` yields a row too few (must fail).
* ``toy_threads`` (requires probe): imports torch in ``load``; logs ``toy_threads <torch threads>``.

``toy_a`` and ``toy_slow`` SIGKILL their own (worker) process on a video whose key contains
``$AVPIPE_TOY_KILL``: every time, or — with ``$AVPIPE_TOY_KILL_ONCE=<marker file>`` — only while
the marker does not exist yet (the first death creates it), to test worker-death recovery.
``$AVPIPE_TOY_KILL_SIGNAL`` (e.g. ``SIGSEGV``) sends that signal instead of SIGKILL.

Every compute appends ``<stage> <content_id>`` to ``$AVPIPE_TOY_LOG`` when set, so tests can
count what was actually computed.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from avpipe.pipeline.chunks import RowChunks
from avpipe.pipeline.stage import _REGISTRY, Stage, StageResult, register_stage

TOY_STAGES = ("toy_a", "toy_b", "toy_slow", "toy_bad", "toy_fail", "toy_load", "toy_chunks", "toy_threads")


def _log(stage: str, cid: str) -> None:
    path = os.environ.get("AVPIPE_TOY_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{stage} {cid}\n")


def _maybe_kill(key: str) -> None:
    needle = os.environ.get("AVPIPE_TOY_KILL")
    if not needle or needle not in key:
        return
    marker = os.environ.get("AVPIPE_TOY_KILL_ONCE")
    if marker:
        if os.path.exists(marker):
            return
        with open(marker, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), getattr(signal, os.environ.get("AVPIPE_TOY_KILL_SIGNAL", "SIGKILL")))


@dataclass
class AConfig:
    scale: float = 1.0


@dataclass
class BConfig:
    offset: float = 0.0


class ToyA(Stage):
    name = "toy_a"
    version = "1"
    config_cls = AConfig
    requires = ("probe",)
    videos_per_task = 3

    def compute(self, video, inputs):
        _maybe_kill(video.key)
        _log(self.name, video.content_id)
        ts = inputs["probe"].timestamps
        data = np.stack([ts * self.config.scale, np.arange(len(ts), dtype=np.float64)], axis=1)
        return StageResult(data=data.astype(np.float32), attrs={"scale": self.config.scale})


class ToyB(Stage):
    name = "toy_b"
    version = "1"
    config_cls = BConfig
    requires = ("toy_a",)
    videos_per_task = 4

    def compute(self, video, inputs):
        _log(self.name, video.content_id)
        a = inputs["toy_a"]
        assert a.timestamps is not None and len(a.timestamps) == len(a.data)
        data = a.data.sum(axis=1, keepdims=True) + self.config.offset
        mask = np.arange(len(data)) % 2 == 0
        return StageResult(data=data, mask=mask)


class ToySlow(Stage):
    name = "toy_slow"
    version = "1"
    requires = ("probe",)
    videos_per_task = 1

    def compute(self, video, inputs):
        time.sleep(float(os.environ.get("AVPIPE_TOY_SLEEP", "0")))
        _maybe_kill(video.key)
        _log(self.name, video.content_id)
        ts = inputs["probe"].timestamps
        return StageResult(data=(ts[:, None] * 2.0).astype(np.float32))


class ToyBad(Stage):
    name = "toy_bad"
    version = "1"
    requires = ("probe",)

    def compute(self, video, inputs):
        n = len(inputs["probe"].timestamps)
        return StageResult(data=np.zeros((max(0, n - 1), 2), np.float32))


class ToyFail(Stage):
    name = "toy_fail"
    version = "1"
    requires = ("probe",)

    def compute(self, video, inputs):
        if "fail" in video.key:
            raise RuntimeError(f"toy failure for {video.key}")
        return StageResult(data=np.zeros((len(inputs["probe"].timestamps), 1), np.float32))


def _toy_a_rows(ts: np.ndarray) -> np.ndarray:
    return np.stack([ts, np.arange(len(ts), dtype=np.float64)], axis=1).astype(np.float32)


@dataclass
class LoadConfig:
    log: str = ""  # where load/compute lines go (config, not env: pool workers outlive tests)
    hold_mb: int = 0  # memory the loaded "model" holds (touched, so resident)
    compute_s: float = 0.0  # seconds each compute takes


def _log_to(path: str, what: str, value: str) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(f"{what} {value}\n")


class ToyLoad(Stage):
    name = "toy_load"
    version = "1"
    config_cls = LoadConfig
    requires = ("probe",)
    videos_per_task = 1

    def load(self) -> None:
        _log_to(self.config.log, "toy_load.load", str(os.getpid()))
        self.model = np.ones(self.config.hold_mb << 20, np.uint8)

    def compute(self, video, inputs):
        _log_to(self.config.log, self.name, video.content_id)
        time.sleep(self.config.compute_s)
        return StageResult(data=_toy_a_rows(inputs["probe"].timestamps))


class ToyChunks(Stage):
    name = "toy_chunks"
    version = "1"
    requires = ("probe",)
    videos_per_task = 4

    def compute(self, video, inputs):
        _log(self.name, video.content_id)
        rows = _toy_a_rows(inputs["probe"].timestamps)
        short = "short" in video.key
        needle = os.environ.get("AVPIPE_TOY_KILL")
        kill = bool(needle) and needle in video.key

        def gen():
            for i in range(0, len(rows) - int(short), 3):
                if kill and i > 0:  # the first chunk is in the temp shard by now
                    os.kill(os.getpid(), signal.SIGKILL)
                yield rows[i:min(i + 3, len(rows) - int(short))]

        return StageResult(data=RowChunks(len(rows), (2,), np.float32, gen), attrs={"chunked": True})


class ToyThreads(Stage):
    name = "toy_threads"
    version = "1"
    requires = ("probe",)

    def load(self) -> None:
        import torch  # noqa: F401  (a stage that uses torch)

    def compute(self, video, inputs):
        import torch

        n = torch.get_num_threads()
        _log(self.name, str(n))
        # also stored: a reused pool worker keeps the environment (and so the log path) it started with
        return StageResult(data=_toy_a_rows(inputs["probe"].timestamps), attrs={"torch_threads": n})


class ToyDevice(Stage):
    """Stores the device its worker resolved and the GPUs that worker sees (no GPU needed)."""

    name = "toy_device"
    version = "1"
    requires = ("probe",)
    videos_per_task = 1

    def compute(self, video, inputs):
        return StageResult(data=_toy_a_rows(inputs["probe"].timestamps),
                           attrs={"device": self.runtime.resolve_device(), "pid": os.getpid(),
                                  "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")})


CLASSES = (ToyA, ToyB, ToySlow, ToyBad, ToyFail, ToyLoad, ToyChunks, ToyThreads, ToyDevice)


def register() -> None:
    for c in CLASSES:
        register_stage(c)


def unregister() -> None:
    for c in CLASSES:
        if _REGISTRY.get(c.name) is c:
            del _REGISTRY[c.name]


register()
