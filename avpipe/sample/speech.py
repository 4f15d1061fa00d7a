"""Offline speech synthesis through the espeak-ng library bundled in the ``espeakng-loader`` wheel.

Why ctypes and not a program: a fresh machine has no ``espeak-ng`` binary and no apt step; the
wheel carries ``libespeak-ng.so`` and its data. We also get word events with their sample
positions, which gives the tests ground-truth word times.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass
class Speech:
    """Synthesised speech: mono int16 samples, rate, and (word, start_s, end_s) per word."""

    samples: np.ndarray
    sample_rate: int
    words: list[tuple[str, float, float]]

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class _Engine:
    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _rate = 22050

    @classmethod
    def lib(cls) -> ctypes.CDLL:
        if cls._lib is None:
            try:
                import espeakng_loader
            except ImportError as e:  # pragma: no cover - depends on extras
                raise RuntimeError(
                    "speech synthesis needs the 'sample' extra: pip install 'avpipe[sample]'") from e
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            lib.espeak_Initialize.restype = ctypes.c_int
            rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                         espeakng_loader.get_data_path().encode(), 0)
            if rate <= 0:
                raise RuntimeError("espeak-ng failed to initialise")
            cls._rate = rate
            cls._lib = lib
        return cls._lib


def synthesize(text: str, *, rate_wpm: int = 150, pitch: int = 50, volume: int = 100,
               pitch_range: int = 50, voice: str = "en-us") -> Speech:
    """Speak ``text``; prosody parameters as espeak-ng defines them (pitch/range 0–100)."""
    with _Engine._lock:
        lib = _Engine.lib()
        chunks: list[np.ndarray] = []
        events: list[tuple[int, int, int]] = []  # (text_position, length, sample)
        total = [0]

        def cb(wav, n, ev):  # noqa: ANN001 - ctypes callback
            if n > 0 and wav:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while ev and ev[i].type != EVENT_LIST_TERMINATED:
                if ev[i].type == EVENT_WORD:
                    events.append((ev[i].text_position, ev[i].length, ev[i].sample))
                i += 1
            total[0] += max(n, 0)
            return 0

        c_cb = _CALLBACK(cb)
        lib.espeak_SetSynthCallback(c_cb)
        lib.espeak_SetVoiceByName(voice.encode())
        lib.espeak_SetParameter(PARAM_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(PARAM_VOLUME, int(volume), 0)
        lib.espeak_SetParameter(PARAM_RANGE, int(pitch_range), 0)
        data = text.encode("utf-8") + b"\0"
        lib.espeak_Synth(ctypes.c_char_p(data), len(data), 0, POS_CHARACTER, 0,
                         ESPEAK_CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        sr = _Engine._rate
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    # Word events give the start sample; a word ends where the next starts (or at the last
    # non-silent sample), trimmed of trailing silence.
    words: list[tuple[str, float, float]] = []
    raw = text.encode("utf-8")
    starts = [(raw[max(p - 1, 0):max(p - 1, 0) + ln].decode("utf-8", "replace"), s) for p, ln, s in events]
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    last = (loud[-1] + 1) if len(loud) else len(samples)
    for i, (w, s) in enumerate(starts):
        e = starts[i + 1][1] if i + 1 < len(starts) else last
        seg = np.abs(samples[s:e].astype(np.int32))
        nz = np.flatnonzero(seg > 300)
        e_trim = s + (nz[-1] + 1 if len(nz) else 0)
        words.append((w, s / sr, max(e_trim, s + 1) / sr))
    return Speech(samples=samples, sample_rate=sr, words=words)
