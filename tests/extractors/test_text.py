"""text: words embedded in context; each frame carries the vector of the word covering it."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.extractors.text import Text, TextConfig, assign_frames, unreliable_words
from avpipe.pipeline.chunks import dense
from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.stage import StageResult, VideoRef

from .test_audio import probe_entry


def asr_entry(words: list[tuple[str, float, float]], segments: list[int] | None = None,
              probs: list[float] | None = None) -> MemoryEntry:
    wt = np.array([[s, e] for _, s, e in words], np.float64).reshape(-1, 2)
    seg = np.zeros(len(words), np.int32) if segments is None else np.asarray(segments, np.int32)
    prob = np.ones(len(words), np.float32) if probs is None else np.asarray(probs, np.float32)
    return MemoryEntry(StageResult(data=wt, extras={
        "words": np.array([w for w, _, _ in words], dtype=str), "word_times": wt,
        "word_segment": seg, "word_prob": prob},
        attrs={"present": True}), stage="asr")


def test_assign_frames_and_hold_gap() -> None:
    wt = np.array([[0.5, 1.0], [1.2, 1.4], [1.4, 1.6]])
    t = np.array([0.0, 0.5, 0.99, 1.0, 1.1, 1.25, 1.4, 1.7])
    assert assign_frames(t, wt).tolist() == [-1, 0, 0, -1, -1, 1, 2, -1]
    assert assign_frames(t, wt, hold_gap_s=0.15).tolist() == [-1, 0, 0, 0, 0, 1, 2, 2]
    assert assign_frames(t, np.zeros((0, 2))).tolist() == [-1] * 8


@pytest.fixture(scope="module")
def stage() -> Text:
    s = Text()
    try:
        s.model_dir()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"MiniLM not installed: {e}")
    return s


def test_frames_under_words_carry_their_vectors(stage: Text, talking_head) -> None:
    truth = [(w, s, e) for w, s, e in talking_head.truth["words"]]
    times = np.asarray(talking_head.truth["frame_times"])
    v = VideoRef("t", "t", talking_head.path)
    r = dense(stage.compute(v, {"probe": probe_entry(times), "asr": asr_entry(truth)}))
    assert r.data.shape == (len(times), 384) and r.data.dtype == np.float32
    idx = r.extras["word_index"]
    for i, t in enumerate(times):
        inside = [k for k, (_, s, e) in enumerate(truth) if s <= t < e]
        if inside:
            assert r.mask[i] and idx[i] == inside[-1]
            np.testing.assert_array_equal(r.data[i], r.extras["word_vectors"][inside[-1]])
        else:
            assert not r.mask[i] and not r.data[i].any()
    assert not r.mask[times < 0.5].any() and r.mask.sum() > 100
    np.testing.assert_allclose(np.linalg.norm(r.data[r.mask], axis=1), 1.0, atol=1e-5)
    assert r.attrs["dim"] == 384 and len(stage.weights_id()) == 64


def test_context_changes_the_word_vector(stage: Text) -> None:
    a, _ = stage.embed_segment(["the", "river", "bank", "was", "muddy"])
    b, _ = stage.embed_segment(["the", "bank", "approved", "my", "loan"])
    c, _ = stage.embed_segment(["the", "river", "bank", "was", "muddy"])
    cos = float(a[2] @ b[1])
    assert cos < 0.99 and np.allclose(a, c, atol=1e-5)


def test_no_words_all_masked(stage: Text) -> None:
    times = np.arange(10) / 25
    r = dense(stage.compute(VideoRef("x", "x", None), {"probe": probe_entry(times), "asr": asr_entry([])}))  # type: ignore[arg-type]
    assert r.data.shape == (10, 384) and not r.mask.any()


def test_hold_gap_config(stage: Text) -> None:
    times = np.array([0.1, 0.3, 0.45, 0.7])
    words = [("hello", 0.0, 0.2), ("there", 0.5, 0.8)]
    r0 = dense(stage.compute(VideoRef("x", "x", None), {"probe": probe_entry(times), "asr": asr_entry(words)}))  # type: ignore[arg-type]
    r1 = dense(Text(TextConfig(hold_gap_s=0.2)).compute(VideoRef("x", "x", None),  # type: ignore[arg-type]
                                                        {"probe": probe_entry(times), "asr": asr_entry(words)}))
    assert r0.mask.tolist() == [True, False, False, True]
    assert r1.mask.tolist() == [True, True, False, True]


def test_unreliable_words_flags() -> None:
    words = [("a", 0.0, 0.3), ("b", 0.3, 0.5), ("c", 0.5, 19.0), ("d", 19.0, 19.2)]
    e = asr_entry(words, probs=[0.9, 0.05, 0.9, float("nan")])
    wt = np.asarray(e.extra("word_times"))
    low, long = unreliable_words(e, wt, 0.2, 2.0)
    assert low.tolist() == [False, True, False, False] and long.tolist() == [False, False, True, False]
    low, long = unreliable_words(e, wt, 0.0, float("inf"))
    assert not low.any() and not long.any()


def test_whisper_on_speech_it_cannot_transcribe_marks_few_frames(stage: Text) -> None:
    """The reproduction: 22 s, 7 words with probabilities 0.04-0.36, one spanning 18.5 s — 97 %
    of the frames used to carry a word vector."""
    times = np.arange(0, 22, 0.04)
    words = [("so", 0.2, 0.5), ("the", 0.5, 0.8), ("way", 0.8, 19.3), ("it", 19.3, 19.6),
             ("was", 19.6, 20.4), ("and", 20.4, 20.9), ("yeah", 20.9, 21.5)]
    probs = [0.04, 0.12, 0.36, 0.08, 0.31, 0.05, 0.22]
    v = VideoRef("x", "x", None)  # type: ignore[arg-type]
    r = dense(stage.compute(v, {"probe": probe_entry(times), "asr": asr_entry(words, probs=probs)}))
    assert r.mask.mean() < 0.1  # only the three >= 0.2 words that last < 2 s
    assert r.attrs["n_words_low_prob"] == 4 and r.attrs["n_words_too_long"] == 1
    covered = {int(i) for i in r.extras["word_index"][r.mask]}
    assert covered == {4, 6}  # "was", "yeah"; "way" is too long, the rest too unsure
    off = dense(Text(TextConfig(min_word_prob=0.0, max_word_s=float("inf"))).compute(
        v, {"probe": probe_entry(times), "asr": asr_entry(words, probs=probs)}))
    assert off.mask.mean() > 0.9  # what the stage used to do


def test_thresholds_are_semantic_and_validated() -> None:
    from avpipe.pipeline.fingerprint import stage_fingerprint

    class NoWeights(Text):
        def weights_id(self) -> str | None:
            return "w"

    a = stage_fingerprint(NoWeights(TextConfig()), {"asr": "x", "probe": "p"}).value
    b = stage_fingerprint(NoWeights(TextConfig(min_word_prob=0.5)), {"asr": "x", "probe": "p"}).value
    c = stage_fingerprint(NoWeights(TextConfig(max_word_s=3.0)), {"asr": "x", "probe": "p"}).value
    assert len({a, b, c}) == 3
    with pytest.raises(ValueError, match="min_word_prob"):
        TextConfig(min_word_prob=1.5)
    with pytest.raises(ValueError, match="max_word_s"):
        TextConfig(max_word_s=0)


def test_chunked_rows_equal_the_whole_array(monkeypatch) -> None:
    """Rows built a chunk at a time are the rows the stage built whole before it streamed."""
    import avpipe.pipeline.chunks as chunks
    from avpipe.extractors.text import frame_rows

    monkeypatch.setattr(chunks, "CHUNK_FRAMES", 7)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(9, 384)).astype(np.float32)
    idx = rng.integers(-1, 9, size=100)
    old = np.zeros((100, 384), np.float32)
    old[idx >= 0] = vecs[idx[idx >= 0]]
    rows = frame_rows(vecs, idx)
    assert isinstance(rows, chunks.RowChunks) and len(list(rows.make())) == 15
    got = chunks.materialize(rows)
    assert got.dtype == old.dtype and got.tobytes() == old.tobytes()
