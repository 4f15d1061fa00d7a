"""text options for the papers' inputs: BERT's last-4-layer sum per word (RJCMA) and a mean per
ASR segment (MAVEN), on a tiny BERT built here; old fingerprints unchanged at the defaults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.extractors.text import Text, TextConfig
from avpipe.pipeline.chunks import dense
from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.stage import StageResult, VideoRef

from .test_audio import probe_entry

WORDS = ["hello", "there", "how", "are", "you", "today", "fine"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tinybert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "to", "##day"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=5, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(str(d))
    return d


def asr(words: list[tuple[str, float, float]], seg: list[int], segments: list[tuple[str, float, float]]) -> MemoryEntry:
    wt = np.array([[s, e] for _, s, e in words], np.float64)
    return MemoryEntry(StageResult(data=wt, extras={
        "words": np.array([w for w, _, _ in words], dtype=str), "word_times": wt,
        "word_segment": np.asarray(seg, np.int32), "word_prob": np.ones(len(words), np.float32),
        "segments": np.array([t for t, _, _ in segments], dtype=str),
        "segment_times": np.array([[s, e] for _, s, e in segments], np.float64)},
        attrs={"present": True}), stage="asr")


ENTRY = asr([("hello", 0.1, 0.4), ("there", 0.4, 0.8), ("how", 1.2, 1.4), ("are", 1.4, 1.6), ("you", 1.6, 1.9)],
            [0, 0, 1, 1, 1], [(" Hello there", 0.1, 0.8), (" how are you", 1.2, 1.9)])
TIMES = np.arange(0, 2.0, 0.04)


def _reference(d: Path, text: str | list[str], split: bool) -> tuple[list[int | None], torch.Tensor]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d))
    enc = tok(text, is_split_into_words=split, return_tensors="pt")
    with torch.inference_mode():
        out = AutoModel.from_pretrained(str(d)).eval()(**enc, output_hidden_states=True)
    return enc.word_ids(0), out.hidden_states


def test_sum_of_last_four_layers_per_word(tiny_bert: Path) -> None:
    st = Text(TextConfig(model=str(tiny_bert), layers="sum_last4", normalize=False, min_word_prob=0.0))
    r = dense(st.compute(VideoRef("v", "v", Path("v.mp4")), {"probe": probe_entry(TIMES), "asr": ENTRY}))
    wids, hs = _reference(tiny_bert, ["how", "are", "you"], True)
    h = (hs[-1] + hs[-2] + hs[-3] + hs[-4])[0].numpy()
    wid = np.array([-1 if w is None else w for w in wids])
    i = int(np.flatnonzero((TIMES >= 1.4) & (TIMES < 1.6))[0])  # "are", word 1 of segment 1
    np.testing.assert_allclose(r.data[i], h[wid == 1].mean(0), atol=1e-5)
    last = dense(Text(TextConfig(model=str(tiny_bert), normalize=False, min_word_prob=0.0)).compute(
        VideoRef("v", "v", Path("v.mp4")), {"probe": probe_entry(TIMES), "asr": ENTRY}))
    np.testing.assert_allclose(last.data[i], hs[-1][0].numpy()[wid == 1].mean(0), atol=1e-5)
    assert r.attrs["layers"] == "sum_last4"


def test_segment_mean_covers_the_segment_frames(tiny_bert: Path) -> None:
    st = Text(TextConfig(model=str(tiny_bert), unit="segment", normalize=False))
    r = dense(st.compute(VideoRef("v", "v", Path("v.mp4")), {"probe": probe_entry(TIMES), "asr": ENTRY}))
    _, hs = _reference(tiny_bert, "how are you", False)
    want = hs[-1][0].numpy().mean(0)
    in_seg1 = (TIMES >= 1.2) & (TIMES < 1.9)
    gap = (TIMES >= 0.8) & (TIMES < 1.2)
    assert r.mask[in_seg1].all() and not r.mask[gap].any() and not r.data[gap].any()
    np.testing.assert_allclose(r.data[in_seg1], np.broadcast_to(want, (in_seg1.sum(), 16)), atol=1e-5)
    assert r.extras["segment_index"][in_seg1].tolist() == [1] * int(in_seg1.sum())


def test_new_options_leave_existing_fingerprints_alone() -> None:
    old_keys = {"model", "normalize", "hold_gap_s", "max_tokens", "min_word_prob", "max_word_s"}
    assert set(Text().semantic_config()) == old_keys
    assert Text(TextConfig(layers="sum_last4")).semantic_config()["layers"] == "sum_last4"
    assert Text(TextConfig(unit="segment")).semantic_config()["unit"] == "segment"
