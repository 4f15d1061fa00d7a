"""The stage interface: what one extraction step declares and computes.

A stage is a class registered by name (like timm's model registry, :mod:`avpipe.registry`): the
built-in stages in the lazy table :data:`BUILTIN_STAGES` (plain "module:Class" strings, so this
package imports no extractor until a stage is looked up); a third-party package's under the
``avpipe.stages`` entry-point group of its ``pyproject.toml``; scripts and tests with
:func:`register_stage` or ``$AVPIPE_PLUGINS`` (docs/extending.md). The plain types it exchanges
(:class:`StageResult`, :class:`VideoRef`, :class:`Runtime`) live in :mod:`avpipe.pipeline.types`.
It declares:

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from avpipe.pipeline import graph
from avpipe.pipeline.types import PROBE, Runtime, StageError, StageResult, VideoRef
from avpipe.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.pipeline.entry import Entry

__all__ = ["BUILTIN_STAGES", "PROBE", "STAGES", "NoConfig", "Runtime", "Stage", "StageError", "StageResult",
           "VideoRef", "dependents", "get_stage_class", "load_plugins", "register_stage", "stage_graph",
           "stage_registry", "topological_order"]


@dataclass
class NoConfig:
    """Config of a stage without options."""


class Stage(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    config_cls: ClassVar[type] = NoConfig
    requires: ClassVar[tuple[str, ...]] = ()
    per_frame: ClassVar[bool] = True
    # Most videos per task (fewer when needed to give every worker tasks). Non-semantic.
    videos_per_task: ClassVar[int] = 8
    description: ClassVar[str] = ""
    # True: run only when asked for (``--stages``, or a preset's ``[features]``), never by a plain
    # ``avpipe extract``: stages that download large models or cost much more than real time.
    opt_in: ClassVar[bool] = False

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
        raise :class:`~avpipe.pipeline.types.WeightsMissingError` (the weights registry does) with
        a clear message when the weights are not available.
        """
        return None

    def semantic_config(self) -> dict[str, Any]:
        """The config as it enters the fingerprint. Override to drop keys that cannot change
        the output (rare: such keys belong in Runtime)."""
        return dataclasses.asdict(self.config)

    # -- execution --------------------------------------------------------------------------
    def load(self) -> None:
        """Load models; a worker process does it once per stage and reuses the stage for all its
        tasks (avpipe.pipeline.stage_memo). Default: nothing."""

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True

    @classmethod
    def row_times(cls, entry: "Entry", frame_times: Any) -> Any:
        """Seconds of video time of each row of ``entry.data`` (``Entry.timestamps``), or None.

        Why a hook: timestamps must mean one thing, one value per stored row, for every stage.
        Per-frame stages store one row per probe frame, so their rows' times are the video's
        ``frame_times``; a stage with other rows (audio samples, words) overrides this."""
        return frame_times if cls.per_frame else None

    @abstractmethod
    def compute(self, video: VideoRef, inputs: Mapping[str, "Entry"]) -> StageResult:
        """Compute this stage for one video. ``inputs`` holds ``probe`` and every required stage."""


#: The built-in stages: name -> "module:Class". Adding a stage is its module plus one line here
#: (docs/extending.md); the table is plain data, so ``pipeline/`` imports no extractor until a
#: stage is looked up, and no install metadata (entry points, a reinstall) is involved.
BUILTIN_STAGES: dict[str, str] = {
    "probe": "avpipe.pipeline.probe:Probe",
    "faces": "avpipe.extractors.faces:Faces",
    "visual": "avpipe.extractors.visual:Visual",
    "visual_clip": "avpipe.extractors.visual_clip:VisualClip",
    "audio": "avpipe.extractors.audio:Audio",
    "logmel": "avpipe.extractors.logmel:LogMel",
    "egemaps": "avpipe.extractors.egemaps:Egemaps",
    "vggish": "avpipe.extractors.vggish:VGGishStage",
    "asr": "avpipe.extractors.asr:ASR",
    "text": "avpipe.extractors.text:Text",
    "speech": "avpipe.extractors.speech:Speech",
    "speech_segments": "avpipe.extractors.speech:SpeechSegments",
}


def _check_stage(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise TypeError(f"stage {name!r}: {cls!r} is not a Stage class")
    if getattr(cls, "name", None) != name:
        raise ValueError(f"stage {name!r} loads stage named {getattr(cls, 'name', None)!r}")


STAGES: Registry[type[Stage]] = Registry("stage", BUILTIN_STAGES, check=_check_stage)
#: The loaded stages (the registry's live mapping; kept under its old name for scripts and tests).
_REGISTRY: dict[str, type[Stage]] = STAGES.objects


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available by name (the same class twice is a no-op; another
    class under a taken name raises)."""
    return STAGES.register(cls.name, cls, description=cls.description, opt_in=cls.opt_in)


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


ENTRY_POINT_GROUP = "avpipe.stages"
_ENTRY_POINTS_LOADED = False


def load_entry_points() -> list[str]:
    """Register every third-party stage declared under the ``avpipe.stages`` entry-point group.

    Why entry points: an installed package's stages are found without ``$AVPIPE_PLUGINS``. The
    built-ins come from :data:`BUILTIN_STAGES`; entry points declared by an installed ``avpipe``
    distribution are ignored (the table is authoritative; install metadata can be stale). Loaded
    once per process; an entry point that cannot be loaded is an error naming it.
    """
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return []
    names = STAGES.load_entry_points(ENTRY_POINT_GROUP, skip_dist="avpipe")
    _ENTRY_POINTS_LOADED = True
    return names


def stage_registry() -> dict[str, type[Stage]]:
    """All registered stages: those declared as ``avpipe.stages`` entry points (the built-ins
    among them), the modules named in ``$AVPIPE_PLUGINS``, and any registered in-process."""
    STAGES.load_all()
    load_entry_points()
    load_plugins()
    return dict(_REGISTRY)


def stage_graph() -> dict[str, tuple[str, ...]]:
    """``name -> requires`` of every registered stage (the input of :mod:`avpipe.pipeline.graph`)."""
    return {n: tuple(c.requires) for n, c in stage_registry().items()}


def get_stage_class(name: str) -> type[Stage]:
    """The stage class of ``name``; unknown: :class:`~avpipe.registry.UnknownNameError` (a
    KeyError) naming the closest known stage."""
    stage_registry()
    return STAGES.get(name)


def default_stage_names() -> list[str]:
    """The stages a plain ``avpipe extract`` runs: every registered stage that is not opt-in."""
    return sorted(n for n, cls in stage_registry().items() if not getattr(cls, "opt_in", False))


def topological_order(names: list[str] | None = None) -> list[str]:
    """Stages in dependency order; with ``names``, those stages plus everything they need."""
    return graph.topological_order(stage_graph(), names)


def dependents(name: str) -> list[str]:
    """Every stage that reads ``name`` directly or transitively (probe: all others)."""
    return graph.dependents(stage_graph(), name)
