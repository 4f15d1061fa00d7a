"""Plain types shared by storage (index, store, shards) and stages: a leaf module.

Why a leaf: the storage modules must not import stage logic and stage modules must not import
storage; both import the records and errors they exchange from here. This module imports nothing
from avpipe (and nothing heavy), so it can be imported from anywhere without a cycle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - annotations only: importing the types stays free
    import numpy as np

#: The stage every other stage reads: it defines the video's frame time base. "Probe comes first"
#: is written once, in :func:`avpipe.pipeline.graph.upstream_names`.
PROBE = "probe"


@dataclass(frozen=True)
class VideoRef:
    """One input video. ``key`` names it for people; ``content_id`` names it for the cache."""

    key: str  # path relative to the --videos root, POSIX, NFC-normalised
    content_id: str  # hash of the file's bytes
    path: Path  # absolute path on this machine (non-semantic: never hashed)
    #: (dev, inode, size, mtime_ns, ctime_ns) of the file when its content id was computed; the
    #: runner compares it after the stage read the file and discards a result whose file changed
    identity: tuple[int, ...] | None = None


@dataclass
class StageResult:
    """What ``compute`` returns for one video.

    * ``data``: for per-frame stages exactly ``(n_frames, dim)`` (one row per video frame of the
      probe's time base); other stages any array (e.g. the audio waveform).
    * ``mask``: ``(n_frames,)`` bool, True where the row is valid (face found, word present).
      ``None`` means all valid.
    * ``extras``: further named arrays stored beside ``data`` (boxes, landmarks, crops, word
      times, UTF-8 encoded JSON for variable-length records ...). Any shape, any length.
    * ``attrs``: JSON-able provenance and facts (window convention, sample rate, ``present``).

    Absence is data: a video with no audio stream gives the ``audio`` stage a result with an
    empty ``data``, ``attrs["present"] = False``; downstream per-frame audio stages then write
    zero rows with an all-False mask.
    """

    data: np.ndarray
    mask: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Runtime:
    """Non-semantic execution settings. Never part of a fingerprint."""

    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    batch_size: int = 32  # frames per model call, where a stage batches
    num_threads: int = 1  # torch intra-op threads inside one worker
    weights: dict[str, str] = field(default_factory=dict)  # weights name -> user-supplied path

    def resolve_device(self) -> str:
        """The concrete device. Only an explicit ``auto`` asks torch, and only when called: a
        stage that never calls this (probe, audio, logmel ...) never imports torch."""
        from avpipe.pipeline.device import resolve_device

        return resolve_device(self.device)


@dataclass(frozen=True)
class Fingerprint:
    """A stage fingerprint with the facts it was computed from (stored in the index)."""

    value: str
    stage: str
    version: str
    config_json: str
    weights_id: str | None
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.value[:16]

    def upstream_json(self) -> str:
        return json.dumps(self.upstream, sort_keys=True)


# -- errors -----------------------------------------------------------------------------------
class StageError(Exception):
    """A clear, per-video failure (bad input, missing weights): recorded, the batch goes on."""


class WeightsMissingError(RuntimeError):
    """A model's pretrained weights are not present; the message says which, where they were
    looked for and how to provide them. The one exception for missing weights, defined here so
    planning recognises it without importing any extractor.

    Raised by the weights registry when a file cannot be found, fetched or verified (a stage
    that cannot load fails its videos with it; another command exits 1), and by planning, which
    gathers every stage's missing weights into one message before any video is touched: that
    one is ``usage=True`` (the user must provide the weights before the run can start; exit 2).
    """

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class PlanError(ValueError):
    """A usage error found while planning (unknown stage, bad config): exit status 2."""


class CacheError(Exception):
    """Base of the cache's own errors (reads and writes)."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise print the message quoted
        return str(self.args[0]) if self.args else self.__class__.__name__


class NotCached(CacheError, KeyError):
    """The requested entry (stage × config × video) is not in the cache."""


class AmbiguousRead(NotCached):
    """The requested config has no entry for the video but other configs of the stage do; the
    read refuses to guess. ``candidates`` lists (fingerprint, config) of those."""

    def __init__(self, message: str, candidates: list[tuple[str, dict[str, Any]]] | None = None) -> None:
        super().__init__(message)
        self.candidates = list(candidates or [])


class CacheReadOnly(CacheError):
    """A command that changes the cache was run on a cache that cannot be written."""


class ShardMissing(CacheError, FileNotFoundError):
    """The index names a shard that is gone from disk (deleted behind the cache's back)."""
