"""Small, fast stages for pipeline tests (registered on import; usable via AVPIPE_PLUGINS).

* ``toy_a`` (requires probe): per frame ``[t * scale, frame index]`` — config ``scale``.
* ``toy_b`` (requires toy_a): per frame the row sum of toy_a plus ``offset``.
* ``toy_slow`` (requires probe): like toy_a but sleeps ``$AVPIPE_TOY_SLEEP`` seconds per video
  (non-semantic, so not in the fingerprint) — for kill-at-random-time tests.
* ``toy_bad`` (requires probe): per-frame stage returning one row too few (must fail).
* ``toy_fail`` (requires probe): raises for videos whose key contains ``fail``.

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

from avpipe.pipeline.stage import _REGISTRY, Stage, StageResult, register_stage

TOY_STAGES = ("toy_a", "toy_b", "toy_slow", "toy_bad", "toy_fail")


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


CLASSES = (ToyA, ToyB, ToySlow, ToyBad, ToyFail)


def register() -> None:
    for c in CLASSES:
        register_stage(c)


def unregister() -> None:
    for c in CLASSES:
        if _REGISTRY.get(c.name) is c:
            del _REGISTRY[c.name]


register()
