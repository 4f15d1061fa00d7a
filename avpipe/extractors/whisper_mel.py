"""Whisper's log-mel spectrogram computed a block of frames at a time.

Why: ``whisper.transcribe`` computes the log-mel of the *whole* recording in one call
(``whisper.audio.log_mel_spectrogram``): a padded copy of the waveform, a complex STFT (201 bins ×
frames × 8 bytes), its power and the mel projection, all alive at once. For a 60-minute video
that is ≈ 1.6 GB of temporaries beside the 115 MB mel Whisper actually keeps, per worker.
:func:`log_mel_blocked` computes the same values block by block into one preallocated
``(n_mels, frames)`` tensor, with the right-hand zero padding and the reflect padding at both
ends applied virtually (no padded copy of the waveform).

Same function, same order of operations per element: each frame's FFT only sees its own 400
samples, the power and the log are elementwise, and the global ``max - 8`` floor is taken after
every block is in place (two passes). The tests compare it with Whisper's own function bit for bit.
:func:`precomputed_log_mel` hands ``transcribe`` a log-mel computed beforehand, so the caller
can drop the waveform (230 MB an hour) before Whisper decodes.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

#: frames per block: 60 s of audio (a complex STFT block of ≈ 10 MB)
BLOCK_FRAMES = 6000


def _segment(audio: Any, length: int, start: int, stop: int) -> Any:
    """Samples ``[start, stop)`` of ``audio`` followed by zeros up to ``length``, with torch.stft's
    ``center=True`` reflect padding where ``start < 0`` or ``stop > length``."""
    import torch

    n = audio.shape[0]

    def plain(a: int, b: int) -> Any:  # 0 <= a <= b <= length: audio, then zeros
        inside = audio[min(a, n):min(b, n)]
        zeros = max(0, b - max(a, n))
        return torch.cat([inside, audio.new_zeros(zeros)]) if zeros else inside

    parts = []
    if start < 0:  # reflect about sample 0: x[-i] = x[i]
        parts.append(torch.flip(plain(1, -start + 1), dims=[0]))
    parts.append(plain(max(start, 0), min(stop, length)))
    if stop > length:  # reflect about the last sample: x[L-1+i] = x[L-1-i]
        parts.append(torch.flip(plain(2 * length - 1 - stop, length - 1), dims=[0]))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def log_mel_blocked(audio: Any, n_mels: int = 80, padding: int = 0,
                    block_frames: int = BLOCK_FRAMES) -> Any:
    """The values of ``whisper.audio.log_mel_spectrogram(audio, n_mels, padding)`` for a 16 kHz
    float32 waveform (array or tensor), with memory bounded by one block of frames besides the
    result."""
    import torch
    from whisper.audio import HOP_LENGTH, N_FFT, mel_filters

    if not torch.is_tensor(audio):
        audio = torch.from_numpy(np.asarray(audio))
    length = audio.shape[0] + max(0, padding)
    n_frames = length // HOP_LENGTH  # torch.stft(center=True) gives one more; Whisper drops it
    window = torch.hann_window(N_FFT).to(audio.device)
    filters = mel_filters(audio.device, n_mels)
    out = torch.empty((n_mels, n_frames), dtype=torch.float32, device=audio.device)
    half = N_FFT // 2
    for k0 in range(0, n_frames, block_frames):
        k1 = min(n_frames, k0 + block_frames)
        seg = _segment(audio, length, k0 * HOP_LENGTH - half, (k1 - 1) * HOP_LENGTH + half)
        stft = torch.stft(seg, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        magnitudes = stft.abs() ** 2
        out[:, k0:k1] = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    if n_frames:  # in place: Whisper's torch.maximum(x, max - 8) and (x + 4) / 4, no extra copies
        out.clamp_(min=float(out.max()) - 8.0)
    return out.add_(4.0).div_(4.0)


def transcribe_module() -> Any:
    """The ``whisper.transcribe`` *module* (``import whisper.transcribe as m`` gives the function
    of that name, which the package re-exports over it)."""
    import importlib

    return importlib.import_module("whisper.transcribe")


@contextlib.contextmanager
def precomputed_log_mel(mel: Any) -> Iterator[None]:
    """Within the block, ``whisper.transcribe`` takes ``mel`` as the log-mel of whatever audio it is
    given (call it with an empty array). Whisper uses its ``audio`` argument for nothing else; a
    call that does not take the mel exactly once raises ``RuntimeError`` (a Whisper release that
    changed this would transcribe silence otherwise)."""
    wt = transcribe_module()
    original = wt.log_mel_spectrogram
    taken = []

    def given(audio: Any, n_mels: int = 80, padding: int = 0, device: Any = None) -> Any:
        if int(n_mels) != int(mel.shape[0]):
            raise RuntimeError(f"precomputed log-mel has {mel.shape[0]} mel bands, Whisper asked for {n_mels}")
        taken.append(True)
        return mel if device is None else mel.to(device)

    wt.log_mel_spectrogram = given
    try:
        yield
    finally:
        wt.log_mel_spectrogram = original
    if len(taken) != 1:
        raise RuntimeError(f"whisper.transcribe took the precomputed log-mel {len(taken)} times, not once")
