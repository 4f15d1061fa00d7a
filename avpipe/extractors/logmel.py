"""The ``logmel`` stage: one log-mel row per video frame, on a window anchored at the frame.

Frontend (shared with ``vggish``): the VGGish recipe — 25 ms periodic-Hann frames every 10 ms,
|STFT| with n_fft 512, 64 HTK mel bands 125–7500 Hz (no area normalisation), ``log(mel + 0.01)``.
The spectrogram of the whole track is computed once; each video frame then takes a patch of
``round(window_s / hop_s)`` spectrogram frames starting at ``round(window_start / hop_s)``.

Anchoring (``anchor``; frame time t = the probe's timestamp):

* ``forward`` (default, RJCMA/VGGish): [t, t + window_s) — with window_s = 0.96 s this is exactly
  the 96×64 VGGish patch RJCMA uses per frame;
* ``causal`` (JCA/RJA): [t − window_s, t); set ``window_frames = 32`` for JCA's 32-frame window
  (window = 32 / fps ≈ 1.07 s at 30 fps, 1.28 s at 25 fps);
* ``centered``: [t − window_s/2, t + window_s/2).

Row content (``pool``): ``mean`` (default) — the mean over the patch's spectrogram frames,
``n_mels`` dims: compact, and what a per-frame sequence model needs; ``mean_std`` — mean and
standard deviation, 2·n_mels; ``patch`` — the full patch flattened time-major
(n_patch·n_mels), for models with their own audio CNN.

Outside the audio: samples before 0 / after the end (and the zero padding the ``audio`` stage put
in front of a late-starting track) count as missing; their spectrogram frames take the log floor
``log(0.01)``. A row is valid (mask True) when at least ``min_coverage`` of its window lies on real
audio. No audio stream: n_frames zero rows, all masked.

Output: the rows come back as :class:`~avpipe.pipeline.chunks.RowChunks`, pooled a chunk of
frames at a time and written to the shard chunk by chunk (:func:`pooled_rows`); the values are
those of pooling every patch at once.

Backends: librosa on CPU; on CUDA the same maths in torch (``torch.stft`` with the same window and
librosa's mel matrix) — the test checks both agree.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import Field, model_validator

from avpipe.extractors.audio import SAMPLE_RATE, audio_from, frame_times
from avpipe.pipeline.chunks import RowChunks, chunk_ranges
from avpipe.pipeline.config_schema import Float, Int, config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

Anchor = Literal["forward", "causal", "centered"]
Pool = Literal["mean", "mean_std", "patch"]
ANCHORS: tuple[str, ...] = get_args(Anchor)
POOLS: tuple[str, ...] = get_args(Pool)
Positive = Annotated[Float, Field(gt=0.0)]


@config_dataclass
class LogMelConfig:
    """Semantic options of ``logmel`` (VGGish's log-mel frontend, one window per video frame)."""

    n_mels: Annotated[Int, Field(gt=0, le=1024, description="mel bands")] = 64
    win_s: Annotated[Positive, Field(le=10.0, description="STFT window in seconds")] = 0.025
    hop_s: Annotated[Positive, Field(le=10.0, description="STFT hop in seconds")] = 0.010
    n_fft: Annotated[Int, Field(gt=0, le=1 << 18, description="FFT size (at least the window in samples "
                                                              "is used)")] = 512
    fmin: Annotated[Float, Field(ge=0.0, description="lowest mel frequency in Hz")] = 125.0
    fmax: Annotated[Float, Field(gt=0.0, le=SAMPLE_RATE / 2, description="highest mel frequency in Hz "
                                                                          "(<= Nyquist of 16 kHz audio)")] = 7500.0
    log_offset: Annotated[Positive, Field(description="log(mel + log_offset)")] = 0.01
    window_s: Annotated[Positive, Field(le=600.0, description="per-frame window in seconds (ignored when "
                                                              "window_frames > 0)")] = 0.96
    window_frames: Annotated[Int, Field(ge=0, le=100_000, description="> 0: window = window_frames / fps "
                                                                      "(JCA uses 32)")] = 0
    anchor: Annotated[Anchor, Field(description="where the window sits relative to the frame time: "
                                                "forward [t, t+w), causal [t-w, t), centered")] = "forward"
    pool: Annotated[Pool, Field(description="row per frame: mean of the window's mel frames, mean and std, "
                                            "or the whole patch flattened")] = "mean"
    min_coverage: Annotated[Float, Field(ge=0.0, le=1.0, description="fraction of the window on real audio "
                                                                     "for a valid row")] = 0.5

    @model_validator(mode="after")
    def _band(self) -> "LogMelConfig":
        if self.fmin >= self.fmax:
            raise ValueError(f"fmin ({self.fmin}) must be below fmax ({self.fmax})")
        return self


def mel_matrix(n_mels: int, n_fft: int, fmin: float, fmax: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                               htk=True, norm=None).astype(np.float32)


def log_mel_spectrogram(y: np.ndarray, cfg: LogMelConfig, device: str = "cpu") -> np.ndarray:
    """(n_stft_frames, n_mels) log-mel of ``y``; frame k covers samples [k·hop, k·hop + win).

    No centring: frame k starts at k·hop, which makes "window starts at time a" an index
    ``round(a / hop)`` without half-window shifts.
    """
    sr = SAMPLE_RATE
    win, hop = int(round(cfg.win_s * sr)), int(round(cfg.hop_s * sr))
    n_fft = max(cfg.n_fft, win)
    if len(y) < win:
        return np.zeros((0, cfg.n_mels), np.float32)
    mel = mel_matrix(cfg.n_mels, n_fft, cfg.fmin, cfg.fmax)
    if device.startswith("cuda"):
        return _log_mel_torch(y, mel, win, hop, n_fft, cfg.log_offset, device)
    n = 1 + (len(y) - n_fft) // hop if len(y) >= n_fft else 0
    if n < 2 * SPEC_CHUNK:
        return _log_mel_np(y, mel, win, hop, n_fft, cfg.log_offset)
    out = np.empty((n, cfg.n_mels), np.float32)
    starts = list(range(0, n - SPEC_CHUNK, SPEC_CHUNK))  # the last chunk takes the remainder: >= SPEC_CHUNK
    for i, a in enumerate(starts):
        b = starts[i + 1] if i + 1 < len(starts) else n
        out[a:b] = _log_mel_np(y[a * hop:(b - 1) * hop + n_fft], mel, win, hop, n_fft, cfg.log_offset)
    return out


# STFT frames per chunk of a long track (41 s): the STFT of an hour is 740 MB of complex numbers,
# a chunk's is 8 MB. Chunks are never shorter than this (the tail joins the last one), which keeps
# the mel product on the same BLAS path as the whole-track call: same values to the bit (tested).
SPEC_CHUNK = 4096


def _log_mel_np(y: np.ndarray, mel: np.ndarray, win: int, hop: int, n_fft: int, log_offset: float) -> np.ndarray:
    """librosa log-mel of a whole track or of a frame-aligned piece of it (frames never straddle
    pieces: frame k uses samples [k*hop, k*hop + n_fft), no centring)."""
    import librosa

    spec = np.abs(librosa.stft(y.astype(np.float32), n_fft=n_fft, hop_length=hop, win_length=win,
                               window="hann", center=False))
    return np.log(mel @ spec + log_offset).T.astype(np.float32)


def _log_mel_torch(y: np.ndarray, mel: np.ndarray, win: int, hop: int, n_fft: int,
                   log_offset: float, device: str) -> np.ndarray:
    """The same computation as the librosa path, in torch (for GPUs)."""
    import torch

    x = torch.as_tensor(y, dtype=torch.float32, device=device)
    w = torch.hann_window(win, periodic=True, device=device, dtype=torch.float32)
    s = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=w, center=False,
                   return_complex=True).abs()
    m = torch.as_tensor(mel, device=device) @ s
    return torch.log(m + log_offset).T.contiguous().cpu().numpy().astype(np.float32)


def window_seconds(cfg: LogMelConfig, fps: float | None) -> float:
    if cfg.window_frames > 0:
        if not fps:
            raise StageError("logmel: window_frames needs the video's fps (probe attrs)")
        return cfg.window_frames / float(fps)
    return float(cfg.window_s)


def window_starts(times: np.ndarray, window: float, anchor: str) -> np.ndarray:
    if anchor == "forward":
        return times.copy()
    if anchor == "causal":
        return times - window
    if anchor == "centered":
        return times - window / 2
    raise StageError(f"logmel: unknown anchor {anchor!r}; use one of {ANCHORS}")


def frame_patches(spec: np.ndarray, starts: np.ndarray, window: float, cfg: LogMelConfig
                  ) -> np.ndarray:
    """(n_frames, n_patch, n_mels) patches; spectrogram frames outside [0, len) take the floor."""
    n_patch = max(1, int(round(window / cfg.hop_s)))
    idx0 = np.round(starts / cfg.hop_s).astype(np.int64)
    idx = idx0[:, None] + np.arange(n_patch)[None, :]
    floor = np.float32(np.log(cfg.log_offset))
    if len(spec) == 0:
        return np.full((len(starts), n_patch, cfg.n_mels), floor, np.float32)
    inside = (idx >= 0) & (idx < len(spec))
    out = spec[np.clip(idx, 0, len(spec) - 1)]
    out[~inside] = floor
    return out


def coverage(starts: np.ndarray, window: float, valid_start: float, valid_end: float) -> np.ndarray:
    """Fraction of each window [s, s + window) that lies on real audio."""
    lo = np.maximum(starts, valid_start)
    hi = np.minimum(starts + window, valid_end)
    return np.clip(hi - lo, 0.0, None) / window


def pool_patches(p: np.ndarray, pool: str) -> np.ndarray:
    if pool == "mean":
        return p.mean(axis=1)
    if pool == "mean_std":
        return np.concatenate([p.mean(axis=1), p.std(axis=1)], axis=1)
    if pool == "patch":
        return p.reshape(len(p), -1)
    raise StageError(f"logmel: unknown pool {pool!r}; use one of {POOLS}")


def pooled_rows(spec: np.ndarray, starts: np.ndarray, mask: np.ndarray, window: float, cfg: LogMelConfig,
                chunk: int = 0) -> RowChunks:
    """The stage's rows, ``chunk`` frames at a time: patches are cut and pooled per chunk, so
    the (n_frames, n_patch, n_mels) patch array (2.6 GB for an hour at 30 fps) never exists.
    Each row depends only on its own patch, so the rows equal pooling all patches at once."""
    dim = row_dim(cfg, window)

    def gen() -> Any:
        for i, j in chunk_ranges(len(starts), chunk):
            d = pool_patches(frame_patches(spec, starts[i:j], window, cfg), cfg.pool).astype(np.float32)
            d[~mask[i:j]] = 0.0
            yield d

    return RowChunks(len(starts), (dim,), np.float32, gen)


def zero_rows(n: int, dim: int, chunk: int = 0) -> RowChunks:
    """``n`` zero rows (no audio), in chunks: with ``pool="patch"`` an hour is 2.6 GB of zeros."""
    return RowChunks(n, (dim,), np.float32,
                     lambda: (np.zeros((j - i, dim), np.float32) for i, j in chunk_ranges(n, chunk)))


def row_dim(cfg: LogMelConfig, window: float) -> int:
    n_patch = max(1, int(round(window / cfg.hop_s)))
    return {"mean": cfg.n_mels, "mean_std": 2 * cfg.n_mels, "patch": n_patch * cfg.n_mels}[cfg.pool]


@register_stage
class LogMel(Stage):
    name = "logmel"
    version = "1"
    config_cls = LogMelConfig
    requires = ("audio",)
    per_frame = True
    videos_per_task = 16
    description = "per-frame log-mel (VGGish frontend) on a window anchored at each frame"

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        cfg: LogMelConfig = self.config  # anchor and pool were checked when the config was built
        times = frame_times(inputs)
        fps = inputs["probe"].attrs.get("fps")
        window = window_seconds(cfg, fps)
        attrs: dict[str, Any] = {
            "anchor": cfg.anchor, "window_s": window, "hop_s": cfg.hop_s, "win_s": cfg.win_s,
            "n_mels": cfg.n_mels, "pool": cfg.pool, "n_patch": max(1, int(round(window / cfg.hop_s))),
            "window": {"forward": "[t, t+w)", "causal": "[t-w, t)", "centered": "[t-w/2, t+w/2)"}[cfg.anchor],
            "log": f"log(mel + {cfg.log_offset})", "frontend": "vggish (htk mel, |stft|)",
        }
        dim = row_dim(cfg, window)
        audio = audio_from(inputs)
        if audio is None:
            return StageResult(data=zero_rows(len(times), dim),
                               mask=np.zeros(len(times), bool), attrs={**attrs, "present": False})
        y, a_attrs = audio
        spec = log_mel_spectrogram(y, cfg, self.runtime.resolve_device())
        starts = window_starts(times, window, cfg.anchor)
        vs = float(a_attrs.get("valid_start_s", 0.0))
        ve = float(a_attrs.get("valid_end_s", len(y) / SAMPLE_RATE))
        mask = coverage(starts, window, vs, ve) >= cfg.min_coverage
        return StageResult(data=pooled_rows(spec, starts, mask, window, cfg), mask=mask,
                           attrs={**attrs, "present": True})
