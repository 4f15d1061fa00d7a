"""The stage interface: what one extraction step declares and computes.

A stage is a class registered by name (like timm's model registry). It declares:

* ``name`` and ``version`` — bump ``version`` whenever the code's *output* changes; it enters the
  fingerprint, so old cache entries stop matching instead of being silently reused;
* ``config_cls`` — a dataclass of its *semantic* options (everything that changes the output);
* ``requires`` — the stages it reads. ``probe`` is always available to ``compute`` as well;
* ``compute(video, inputs)`` — one video's upstream entries in, one :class:`StageResult` out.

What it must not do: know where the cache lives, write files, or read options that do not
change the output from its config (device, batch size, threads live in :class:`Runtime`).
Heavy imports (torch, whisper, transformers) belong inside ``load``/``compute`` so that the CLI
and planning stay fast.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.pipeline.store import Entry


@dataclass(frozen=True)
class VideoRef:
    """One input video. ``key`` names it for people; ``content_id`` names it for the cache."""

    key: str  # path relative to the --videos root, POSIX, NFC-normalised
    content_id: str  # hash of the file's bytes
    path: Path  # absolute path on this machine (non-semantic: never hashed)


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
        if self.device != "auto":
            return self.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # pragma: no cover - torch always installed
            return "cpu"


@dataclass
class NoConfig:
    """Config of a stage without options."""


class StageError(Exception):
    """A clear, per-video failure (bad input, missing weights): recorded, the batch goes on."""


class Stage(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    config_cls: ClassVar[type] = NoConfig
    requires: ClassVar[tuple[str, ...]] = ()
    per_frame: ClassVar[bool] = True
    # Videos per task: a worker loads its model once per task. Non-semantic.
    videos_per_task: ClassVar[int] = 8
    description: ClassVar[str] = ""

    def __init__(self, config: Any | None = None, runtime: Runtime | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{self.name}: config must be {self.config_cls.__name__}")
        self.runtime = runtime or Runtime()
        self._loaded = False

    # -- identity ---------------------------------------------------------------------------
    def weights_id(self) -> str | None:
        """Checksum (or other stable id) of the weights this config uses; None if no weights.

        Called on the driver while planning, so it must be cheap (memoised checksums) and must
        raise :class:`avpipe.extractors.weights.WeightsMissingError` with a clear message when the
        weights are not available.
        """
        return None

    def semantic_config(self) -> dict[str, Any]:
        """The config as it enters the fingerprint. Override to drop keys that cannot change
        the output (rare: such keys belong in Runtime)."""
        return dataclasses.asdict(self.config)

    # -- execution --------------------------------------------------------------------------
    def load(self) -> None:
        """Load models once per worker task. Default: nothing."""

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True

    @abstractmethod
    def compute(self, video: VideoRef, inputs: Mapping[str, "Entry"]) -> StageResult:
        """Compute this stage for one video. ``inputs`` holds ``probe`` and every required stage."""


_REGISTRY: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available by name."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"stage {name!r} registered twice ({_REGISTRY[name]} and {cls})")
    _REGISTRY[name] = cls
    return cls


_PLUGINS_LOADED: set[str] = set()


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the stage modules named in ``$AVPIPE_PLUGINS`` (comma-separated module names).

    Why: users' own stages (and test-only stages in subprocess tests) register themselves on
    import with :func:`register_stage`; naming their modules here makes ``avpipe extract`` and
    every worker process see them. Each module is imported once; a module that cannot be
    imported is an error (a typo must not silently drop a stage).
    """
    import importlib
    import os

    raw = os.environ.get("AVPIPE_PLUGINS", "") if spec is None else spec
    loaded = []
    for mod in (m.strip() for m in raw.split(",")):
        if not mod or mod in _PLUGINS_LOADED:
            continue
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ImportError(f"AVPIPE_PLUGINS names module {mod!r}, which cannot be imported: {e}") from e
        _PLUGINS_LOADED.add(mod)
        loaded.append(mod)
    return loaded


def stage_registry() -> dict[str, type[Stage]]:
    """All registered stages: the built-ins (importing avpipe.extractors registers them) and
    the modules named in ``$AVPIPE_PLUGINS``."""
    import avpipe.extractors  # noqa: F401  (registers built-ins)

    load_plugins()
    return dict(_REGISTRY)


def get_stage_class(name: str) -> type[Stage]:
    reg = stage_registry()
    if name not in reg:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(reg))}")
    return reg[name]


def topological_order(names: list[str] | None = None) -> list[str]:
    """Stages in dependency order; with ``names``, those stages plus everything they need."""
    reg = stage_registry()
    wanted: set[str] = set()

    def add(n: str) -> None:
        if n not in reg:
            raise KeyError(f"unknown stage {n!r}; known stages: {', '.join(sorted(reg))}")
        if n in wanted:
            return
        wanted.add(n)
        for r in reg[n].requires:
            add(r)
        if n != "probe":
            add("probe")

    for n in names if names is not None else list(reg):
        add(n)
    order: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        for r in (("probe",) if n != "probe" else ()) + tuple(reg[n].requires):
            visit(r)
        order.append(n)

    for n in sorted(wanted, key=lambda s: (s != "probe", s)):
        visit(n)
    return order


def dependents(name: str) -> list[str]:
    """Every stage that reads ``name`` directly or transitively (probe: all others)."""
    reg = stage_registry()
    out: list[str] = []
    for n in topological_order():
        if n == name:
            continue
        reqs = set(reg[n].requires) | ({"probe"} if n != "probe" else set())
        if reqs & ({name} | set(out)):
            out.append(n)
    return out
