"""Self-supervised speech features (wav2vec 2.0, HuBERT) per video frame or per ASR segment.

Why: ABAW entries and MAVEN read audio through a self-supervised speech encoder; its middle
layers carry prosody and paralinguistics that log-mel statistics only approximate. Two stages:

* ``speech`` — per video frame on ``logmel``'s windows: the encoder runs over the track in
  pieces of ``chunk_s`` seconds (its attention spans one piece, so ``chunk_s`` is semantic), its
  output frames (every 20 ms, frame k covering samples [k·320, k·320 + 400)) whose start falls in
  the frame's window are averaged; ``forward``/``causal``/``centered`` anchors, ``min_coverage``
  mask and no-audio rows exactly as ``logmel``.
* ``speech_segments`` — per ASR segment, as MAVEN: the segment's audio from its start, cut or
  zero-padded to ``segment_s`` (1 s), encoded once; the mean over time is given to every frame in
  the segment's [start, end).

``layer``: ``last`` (default), ``average`` (the mean of every transformer layer's output), or a
number (``0`` = the CNN features after projection, ``1``… the transformer layers). The input is
normalised as the model's own feature-extractor config says. Models: ``hubert-base-ls960``
(facebook/hubert-base-ls960, MAVEN's) and ``wav2vec2-base-960h`` (facebook/wav2vec2-base-960h) are
hub names resolved through Hugging Face's cache (``HF_HUB_OFFLINE`` honoured); any local folder
with ``config.json``, ``preprocessor_config.json`` and the weights works too. ``weights_id`` is the
folder's checksum. Without the hub and without a cached copy: one error saying so.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

from avpipe.extractors import hub  # noqa: F401  (registers the hub models' weights names)
from avpipe.extractors.audio import SAMPLE_RATE, audio_from, frame_times
from avpipe.extractors.logmel import Anchor, coverage, window_starts
from avpipe.extractors.text import assign_frames, frame_rows
from avpipe.extractors.weights import WeightsMissingError, file_checksum, hf_offline, weights_override
from avpipe.pipeline.chunks import RowChunks, chunk_ranges
from avpipe.pipeline.config_schema import Float, Int, config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

STRIDE = 320        # samples between encoder frames (20 ms at 16 kHz) for wav2vec2/HuBERT
RECEPTIVE = 400     # samples one encoder frame sees
Positive = Annotated[Float, Field(gt=0.0)]


def resolve_speech_model(model: str, override: str | None = None) -> Path:
    """A local folder for ``model``: a registered name (weights registry), a folder, or a hub id."""
    from avpipe.extractors.weights import resolve_weights, weight_specs

    if model in weight_specs():
        return resolve_weights(model, override)
    if override:
        p = Path(override).expanduser()
        if not p.is_dir():
            raise WeightsMissingError(f"speech model folder for {model!r} not found at the path you gave: {p}")
        return p
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    repo = model
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=hf_offline(),
                                      allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"]))
    except Exception as e:  # offline and not cached, unknown repo ...
        raise WeightsMissingError(
            f"speech model {model!r} ({repo}) is not in the Hugging Face cache and cannot be downloaded here "
            f"({type(e).__name__}: {str(e)[:200]}); run once where the hub is reachable, or pass a local "
            f"folder (config.json, preprocessor_config.json, weights): --weights {model}=DIR") from e


def _layer_ok(v: str) -> str:
    if v in ("last", "average") or (v.isdigit() and int(v) < 64):
        return v
    raise ValueError("must be 'last', 'average' or a layer number (0 = CNN features)")


@config_dataclass
class SpeechConfig:
    """Semantic options of ``speech`` (encoder, layer, pieces, per-frame windows)."""

    model: Annotated[str, Field(min_length=1, description="hubert-base-ls960, wav2vec2-base-960h, a hub id or "
                                                          "a local folder")] = "hubert-base-ls960"
    layer: Annotated[str, AfterValidator(_layer_ok),
                     Field(description="last, average (mean of the transformer layers) or a number "
                                       "(0 = CNN features)")] = "last"
    chunk_s: Annotated[Positive, Field(le=600.0, description="seconds of audio per encoder pass (attention "
                                                             "spans one piece)")] = 20.0
    window_s: Annotated[Positive, Field(description="per-frame window in seconds (ignored when "
                                                    "window_frames > 0)")] = 0.96
    window_frames: Annotated[Int, Field(ge=0, description="> 0: window = window_frames / fps")] = 0
    anchor: Annotated[Anchor, Field(description="forward [t, t+w), causal [t-w, t), centered")] = "forward"
    min_coverage: Annotated[Float, Field(ge=0.0, le=1.0, description="fraction of the window on real audio "
                                                                     "for a valid row")] = 0.5


@config_dataclass
class SpeechSegmentsConfig:
    """Semantic options of ``speech_segments`` (MAVEN's per-segment audio vector)."""

    model: Annotated[str, Field(min_length=1, description="hubert-base-ls960, wav2vec2-base-960h, a hub id or "
                                                          "a local folder")] = "hubert-base-ls960"
    layer: Annotated[str, AfterValidator(_layer_ok),
                     Field(description="last, average or a layer number")] = "last"
    segment_s: Annotated[Positive, Field(le=60.0, description="seconds from each segment's start that are "
                                                              "encoded (cut or zero-padded; MAVEN: 1)")] = 1.0


class _Encoder:
    """The encoder and its feature extractor, loaded once; ``hidden(y)`` → (frames, D)."""

    def __init__(self, folder: Path, layer: str, device: str) -> None:
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.fe = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        self.layer, self.device = layer, device
        n = int(self.model.config.num_hidden_layers)
        if layer.isdigit() and int(layer) > n:
            raise StageError(f"speech: layer {layer} asked, the model has {n} layers")

    def hidden(self, y: np.ndarray) -> np.ndarray:
        import torch

        if len(y) < RECEPTIVE:
            y = np.pad(y, (0, RECEPTIVE - len(y)))
        x = self.fe(y, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values.to(self.device)
        with torch.inference_mode():
            out = self.model(x, output_hidden_states=self.layer != "last")
            if self.layer == "last":
                h = out.last_hidden_state[0]
            elif self.layer == "average":
                h = torch.stack(out.hidden_states[1:]).mean(0)[0]
            else:
                h = out.hidden_states[int(self.layer)][0]
        return h.float().cpu().numpy()


class _SpeechBase(Stage):
    per_frame = True
    videos_per_task = 4
    opt_in = True  # a hub download and a transformer over the audio: only when asked for

    def model_dir(self) -> Path:
        return resolve_speech_model(self.config.model, weights_override(self.runtime, self.config.model))

    def weights_id(self) -> str | None:
        return file_checksum(self.model_dir())

    def dim(self) -> int:
        import json

        cfg = json.loads((self.model_dir() / "config.json").read_text())
        return int(cfg["hidden_size"])

    def load(self) -> None:
        self.encoder = _Encoder(self.model_dir(), self.config.layer, self.runtime.resolve_device())


@register_stage
class Speech(_SpeechBase):
    name = "speech"
    version = "1"
    config_cls = SpeechConfig
    requires = ("audio",)
    description = "wav2vec2/HuBERT features per frame on logmel's windows (a layer or the layer average)"

    config: SpeechConfig

    def track(self, y: np.ndarray) -> np.ndarray:
        """(n_enc_frames, D): the encoder over ``chunk_s`` pieces; frame k starts at k·20 ms."""
        self.ensure_loaded()
        piece = int(round(self.config.chunk_s * SAMPLE_RATE / STRIDE)) * STRIDE
        parts = []
        for a in range(0, len(y), piece):
            seg = y[a:a + piece]
            if len(seg) < RECEPTIVE and a > 0:
                break  # a tail shorter than one encoder frame adds no frame
            h = self.encoder.hidden(seg)
            parts.append(h[: max(1, (len(seg) - RECEPTIVE) // STRIDE + 1)])
        return np.concatenate(parts) if parts else np.zeros((0, self.dim()), np.float32)

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        from avpipe.extractors.logmel import window_seconds

        cfg = self.config
        times = frame_times(inputs)
        window = window_seconds(cfg, inputs["probe"].attrs.get("fps"))  # type: ignore[arg-type]
        dim = self.dim()
        attrs = {"model": cfg.model, "layer": cfg.layer, "dim": dim, "chunk_s": cfg.chunk_s, "anchor": cfg.anchor,
                 "window_s": window, "encoder_hop_s": STRIDE / SAMPLE_RATE,
                 "window": {"forward": "[t, t+w)", "causal": "[t-w, t)", "centered": "[t-w/2, t+w/2)"}[cfg.anchor]}
        audio = audio_from(inputs)
        if audio is None:
            return StageResult(data=np.zeros((len(times), dim), np.float32), mask=np.zeros(len(times), bool),
                               attrs={**attrs, "present": False})
        y, a_attrs = audio
        h = self.track(np.asarray(y, np.float32))
        starts = window_starts(times, window, cfg.anchor)
        vs = float(a_attrs.get("valid_start_s", 0.0))
        ve = float(a_attrs.get("valid_end_s", len(y) / SAMPLE_RATE))
        mask = coverage(starts, window, vs, ve) >= cfg.min_coverage
        hop = STRIDE / SAMPLE_RATE
        lo = np.clip(np.ceil(starts / hop - 1e-9).astype(np.int64), 0, len(h))
        hi = np.clip(np.ceil((starts + window) / hop - 1e-9).astype(np.int64), 0, len(h))
        csum = np.concatenate([np.zeros((1, h.shape[1])), np.cumsum(h, axis=0, dtype=np.float64)])
        mask &= hi > lo

        def gen() -> Any:
            for i, j in chunk_ranges(len(times), 0):
                n = np.maximum(hi[i:j] - lo[i:j], 1)[:, None]
                d = ((csum[hi[i:j]] - csum[lo[i:j]]) / n).astype(np.float32)
                d[~mask[i:j]] = 0.0
                yield d

        return StageResult(data=RowChunks(len(times), (dim,), np.float32, gen), mask=mask,
                           attrs={**attrs, "present": True})


@register_stage
class SpeechSegments(_SpeechBase):
    name = "speech_segments"
    version = "1"
    config_cls = SpeechSegmentsConfig
    requires = ("audio", "asr")
    description = "wav2vec2/HuBERT vector per ASR segment (first segment_s seconds; MAVEN's audio input)"

    config: SpeechSegmentsConfig

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        cfg = self.config
        times = frame_times(inputs)
        dim = self.dim()
        asr = inputs.get("asr")
        if asr is None:
            raise StageError("speech_segments: the asr stage's output is missing from the inputs")
        st = (np.asarray(asr.extra("segment_times"), np.float64).reshape(-1, 2)
              if "segment_times" in asr.extras else np.zeros((0, 2)))
        attrs = {"model": cfg.model, "layer": cfg.layer, "dim": dim, "segment_s": cfg.segment_s,
                 "assignment": "segment whose [start, end) contains the frame time",
                 "input": f"first {cfg.segment_s} s of the segment (zero-padded)", "n_segments": len(st)}
        audio = audio_from(inputs)
        if audio is None or len(st) == 0:
            return StageResult(data=np.zeros((len(times), dim), np.float32), mask=np.zeros(len(times), bool),
                               extras={"segment_index": np.full(len(times), -1, np.int32)},
                               attrs={**attrs, "present": audio is not None})
        y, _ = audio
        self.ensure_loaded()
        n_in = int(round(cfg.segment_s * SAMPLE_RATE))
        vecs = np.zeros((len(st), dim), np.float32)
        for k, (s, _) in enumerate(st):
            a = max(0, int(round(s * SAMPLE_RATE)))
            seg = np.zeros(n_in, np.float32)
            piece = np.asarray(y[a:a + n_in], np.float32)
            seg[:len(piece)] = piece
            vecs[k] = self.encoder.hidden(seg).mean(axis=0)
        idx = assign_frames(times, st)
        return StageResult(data=frame_rows(vecs, idx), mask=idx >= 0,
                           extras={"segment_index": idx.astype(np.int32), "segment_vectors": vecs},
                           attrs={**attrs, "present": True})
