"""The ``egemaps`` stage: openSMILE's eGeMAPSv02 (or ComParE_2016) descriptors, one row per video frame.

Why: eGeMAPS (Eyben et al. 2016) is the acoustic parameter set designed for affect — pitch,
jitter, shimmer, loudness, HNR, formants, spectral slope — and what ABAW entries (and the RJCMA
pipeline's optional audio input) use beside log-mel. openSMILE runs in-process through the
``opensmile`` package (its wheel ships the library and the configs; optional extra ``egemaps``).
openSMILE is under audEERING's research licence: non-commercial use; commercial use needs a
licence from audEERING. That is why it is an extra, never a dependency.

Time base, windows and mask: exactly ``logmel``'s (see :mod:`avpipe.extractors.logmel`).
openSMILE computes its low-level descriptors (LLDs: 25 for eGeMAPSv02, 65 for ComParE_2016) every
10 ms over the whole track; LLD frame k starts at k·10 ms (no centring), like a log-mel frame.
Each video frame at time t takes the LLD frames of its window — ``forward`` [t, t + w),
``causal`` [t − w, t) or ``centered`` — starting at index ``round(start / 10 ms)``, and pools
them: ``mean`` (default), ``mean_std`` or ``patch`` (flattened, time-major). LLD frames outside
the track count as zeros; a row is valid when at least ``min_coverage`` of its window lies on real
audio (the ``audio`` stage's ``valid_start_s``/``valid_end_s``), and invalid rows are zeros.

``level = "functionals"`` gives openSMILE's own functionals instead (88 for eGeMAPSv02, 6373 for
ComParE_2016) over each frame's window: openSMILE computes them once over the track on windows of
``w`` seconds every 10 ms (its ``frameMode = fixed``), and the frame takes the window starting at
``round(start / 10 ms)``. Functionals of a sliding window differ slightly from openSMILE run on the
window cut out alone (smoothing and pitch tracking see the context), which is what a per-frame
feature wants.

No audio stream: n_frames zero rows, all masked.
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from avpipe.extractors.audio import SAMPLE_RATE, audio_from, frame_times
from avpipe.extractors.logmel import Anchor, Pool, coverage, window_starts
from avpipe.extractors.weights import WeightSpec, WeightsMissingError, file_checksum, register_weights
from avpipe.pipeline.chunks import RowChunks, chunk_ranges
from avpipe.pipeline.config_schema import Float, Int, config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

HOP_S = 0.010  # openSMILE's LLD step in both feature sets
FeatureSet = Literal["eGeMAPSv02", "ComParE_2016"]
Level = Literal["lld", "functionals"]
DIMS = {("eGeMAPSv02", "lld"): 25, ("eGeMAPSv02", "functionals"): 88,
        ("ComParE_2016", "lld"): 65, ("ComParE_2016", "functionals"): 6373}
EXTRA_HINT = ("pip install 'avpipe[egemaps]' (the opensmile package; openSMILE is under audEERING's "
              "research licence, non-commercial use)")
Positive = Annotated[Float, Field(gt=0.0)]


def _config_dir() -> Path | None:
    """openSMILE's config folder inside the installed ``opensmile`` package (found without importing it)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("opensmile")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "core" / "config"
    return p if p.is_dir() else None


register_weights(WeightSpec(
    name="opensmile-configs", filename="opensmile-config", source="package", package="opensmile",
    description="openSMILE feature-set configs (eGeMAPSv02, ComParE_2016); audEERING research licence",
    how=EXTRA_HINT, locate=_config_dir))


class OpenSmileMissing(WeightsMissingError):
    """The ``opensmile`` package (extra ``egemaps``) is not installed."""


@config_dataclass
class EgemapsConfig:
    """Semantic options of ``egemaps`` (openSMILE descriptors on ``logmel``'s per-frame windows)."""

    feature_set: Annotated[FeatureSet, Field(description="openSMILE feature set: eGeMAPSv02 (25 LLDs, 88 "
                                                         "functionals) or ComParE_2016 (65 / 6373)")] = "eGeMAPSv02"
    level: Annotated[Level, Field(description="lld: pooled low-level descriptors; functionals: openSMILE's "
                                              "functionals over the window")] = "lld"
    window_s: Annotated[Positive, Field(description="per-frame window in seconds (ignored when "
                                                    "window_frames > 0)")] = 1.0
    window_frames: Annotated[Int, Field(ge=0, description="> 0: window = window_frames / fps")] = 0
    anchor: Annotated[Anchor, Field(description="forward [t, t+w), causal [t-w, t), centered")] = "forward"
    pool: Annotated[Pool, Field(description="level=lld: mean, mean and std, or the whole patch flattened "
                                            "(ignored for functionals)")] = "mean"
    min_coverage: Annotated[Float, Field(ge=0.0, le=1.0, description="fraction of the window on real audio "
                                                                     "for a valid row")] = 0.5


def _smile(cfg: EgemapsConfig, window: float, conf_dir: Path) -> Any:
    try:
        import opensmile
    except ImportError as e:
        raise OpenSmileMissing(f"the egemaps stage needs openSMILE: {EXTRA_HINT}") from e
    fs = getattr(opensmile.FeatureSet, cfg.feature_set)
    if cfg.level == "lld":
        return opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    inc = conf_dir / f"fixed_{window:.6f}.conf.inc"
    inc.write_text(f"frameMode = fixed\nframeSize = {window:.6f}\nframeStep = {HOP_S}\n"
                   "frameCenterSpecial = left\n")
    return opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals,
                           options={"frameModeFunctionalsConf": str(inc)})


def track_features(y: np.ndarray, cfg: EgemapsConfig, window: float) -> np.ndarray:
    """(n, dim) float32 openSMILE output over the whole track; row k starts at k·10 ms."""
    with tempfile.TemporaryDirectory(prefix="avpipe-smile-") as td:
        smile = _smile(cfg, window, Path(td))
        if len(y) < int(0.06 * SAMPLE_RATE):  # shorter than the longest LLD frame: nothing to describe
            return np.zeros((0, DIMS[(cfg.feature_set, cfg.level)]), np.float32)
        df = smile.process_signal(np.ascontiguousarray(y, np.float32), SAMPLE_RATE)
    starts = df.index.get_level_values("start").total_seconds().to_numpy()
    k = np.round(starts / HOP_S).astype(np.int64)
    if len(k) and not np.array_equal(k, np.arange(len(k))):
        raise StageError(f"openSMILE frames are not every {HOP_S * 1000:.0f} ms from 0 (got starts "
                         f"{starts[:3]}…): unsupported openSMILE config")
    return np.nan_to_num(df.to_numpy(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def frame_rows(feats: np.ndarray, starts: np.ndarray, window: float, cfg: EgemapsConfig,
               mask: np.ndarray) -> RowChunks:
    """The stage's rows, a chunk of frames at a time (see module docstring)."""
    dim = row_dim(cfg, window, feats.shape[1])
    idx0 = np.round(starts / HOP_S).astype(np.int64)
    n_patch = max(1, int(round(window / HOP_S)))

    def gen() -> Any:
        for i, j in chunk_ranges(len(starts), 0):
            if cfg.level == "functionals":
                k = idx0[i:j]
                ok = (k >= 0) & (k < len(feats))
                d = np.zeros((j - i, dim), np.float32)
                d[ok] = feats[k[ok]]
            else:
                idx = idx0[i:j, None] + np.arange(n_patch)[None, :]
                inside = (idx >= 0) & (idx < len(feats))
                p = feats[np.clip(idx, 0, max(len(feats) - 1, 0))] if len(feats) else \
                    np.zeros(idx.shape + (feats.shape[1],), np.float32)
                p[~inside] = 0.0
                if cfg.pool == "mean":
                    d = p.mean(axis=1)
                elif cfg.pool == "mean_std":
                    d = np.concatenate([p.mean(axis=1), p.std(axis=1)], axis=1)
                else:
                    d = p.reshape(len(p), -1)
                d = d.astype(np.float32)
            d[~mask[i:j]] = 0.0
            yield d

    return RowChunks(len(starts), (dim,), np.float32, gen)


def row_dim(cfg: EgemapsConfig, window: float, n_feat: int | None = None) -> int:
    n = DIMS[(cfg.feature_set, cfg.level)] if n_feat is None else n_feat
    if cfg.level == "functionals":
        return n
    return {"mean": n, "mean_std": 2 * n, "patch": max(1, int(round(window / HOP_S))) * n}[cfg.pool]


@register_stage
class Egemaps(Stage):
    name = "egemaps"
    version = "1"
    config_cls = EgemapsConfig
    requires = ("audio",)
    per_frame = True
    videos_per_task = 16
    opt_in = True  # an optional extra with a non-commercial licence: only when asked for
    description = "per-frame openSMILE eGeMAPSv02/ComParE descriptors on logmel's windows ([egemaps] extra)"

    config: EgemapsConfig

    def weights_id(self) -> str | None:
        """The openSMILE library version and its config files' checksum: a different build or
        config would give different numbers, so it enters the fingerprint."""
        d = _config_dir()
        if d is None:
            raise OpenSmileMissing(f"the egemaps stage needs openSMILE: {EXTRA_HINT}")
        from importlib import metadata

        return f"opensmile-{metadata.version('opensmile')}:{file_checksum(d)[:16]}"

    def load(self) -> None:
        try:
            import opensmile  # noqa: F401
        except ImportError as e:
            raise OpenSmileMissing(f"the egemaps stage needs openSMILE: {EXTRA_HINT}") from e

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        from avpipe.extractors.logmel import window_seconds

        cfg = self.config
        self.ensure_loaded()
        times = frame_times(inputs)
        fps = inputs["probe"].attrs.get("fps")
        window = window_seconds(cfg, fps)  # type: ignore[arg-type]  (same fields as LogMelConfig)
        attrs: dict[str, Any] = {
            "feature_set": cfg.feature_set, "level": cfg.level, "anchor": cfg.anchor, "window_s": window,
            "hop_s": HOP_S, "pool": cfg.pool if cfg.level == "lld" else "functionals",
            "window": {"forward": "[t, t+w)", "causal": "[t-w, t)", "centered": "[t-w/2, t+w/2)"}[cfg.anchor],
            "licence": "openSMILE: audEERING research licence (non-commercial)",
        }
        dim = row_dim(cfg, window)
        audio = audio_from(inputs)
        if audio is None:
            return StageResult(data=np.zeros((len(times), dim), np.float32),
                               mask=np.zeros(len(times), bool), attrs={**attrs, "present": False})
        y, a_attrs = audio
        feats = track_features(y, cfg, window)
        names = _feature_names(cfg)
        starts = window_starts(times, window, cfg.anchor)
        vs = float(a_attrs.get("valid_start_s", 0.0))
        ve = float(a_attrs.get("valid_end_s", len(y) / SAMPLE_RATE))
        mask = coverage(starts, window, vs, ve) >= cfg.min_coverage
        if feats.shape[1] != DIMS[(cfg.feature_set, cfg.level)]:
            raise StageError(f"openSMILE gave {feats.shape[1]} {cfg.feature_set} {cfg.level} values, "
                             f"expected {DIMS[(cfg.feature_set, cfg.level)]}")
        return StageResult(data=frame_rows(feats, starts, window, cfg, mask), mask=mask,
                           attrs={**attrs, "present": True, "features": names})


def _feature_names(cfg: EgemapsConfig) -> list[str]:
    """openSMILE's names of the values (``mean_std``: ``_mean`` then ``_std``; ``patch``: the LLD
    names, repeated per 10 ms step). Not stored for ComParE functionals (6373 names would exceed
    what an HDF5 attribute holds comfortably)."""
    if cfg.feature_set == "ComParE_2016" and cfg.level == "functionals":
        return []
    with tempfile.TemporaryDirectory(prefix="avpipe-smile-") as td:
        names = list(_smile(cfg, 1.0, Path(td)).feature_names)
    if cfg.level == "lld" and cfg.pool == "mean_std":
        return [f"{n}_mean" for n in names] + [f"{n}_std" for n in names]
    return names
