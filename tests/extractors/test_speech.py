"""speech / speech_segments: a tiny HuBERT and wav2vec2 built here (never presented as pretrained),
against the model's own forward; windows, layers, segments and the offline error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.extractors.speech import Speech, SpeechConfig, SpeechSegments, SpeechSegmentsConfig
from avpipe.extractors.weights import WeightsMissingError
from avpipe.pipeline.chunks import dense
from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.stage import StageResult

from .test_audio import clip_inputs


def _save_tiny(kind: str, d: Path) -> Path:
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model)

    torch.manual_seed(0)
    small = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                 conv_dim=(8, 8, 8, 8, 8, 8, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    model = HubertModel(HubertConfig(**small)) if kind == "hubert" else Wav2Vec2Model(Wav2Vec2Config(**small))
    model.eval().save_pretrained(str(d))
    Wav2Vec2FeatureExtractor(do_normalize=kind != "hubert", sampling_rate=16000).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory) -> Path:
    return _save_tiny("hubert", tmp_path_factory.mktemp("hubert"))


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory) -> Path:
    return _save_tiny("wav2vec2", tmp_path_factory.mktemp("w2v"))


def _forward(d: Path, y: np.ndarray, layer: str) -> np.ndarray:
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(str(d))
    m = AutoModel.from_pretrained(str(d)).eval()
    with torch.inference_mode():
        out = m(fe(y, sampling_rate=16000, return_tensors="pt").input_values, output_hidden_states=True)
    if layer == "average":
        return torch.stack(out.hidden_states[1:]).mean(0)[0].numpy()
    return (out.last_hidden_state if layer == "last" else out.hidden_states[int(layer)])[0].numpy()


@pytest.mark.parametrize("layer", ["last", "average", "1"])
def test_frame_rows_are_window_means_of_the_encoder_frames(tiny_w2v: Path, talking_head, layer: str) -> None:
    v, inputs = clip_inputs(talking_head)
    st = Speech(SpeechConfig(model=str(tiny_w2v), layer=layer, chunk_s=60.0))
    r = dense(st.compute(v, inputs))
    n = talking_head.truth["n_frames"]
    assert r.data.shape == (n, 16) and r.attrs["layer"] == layer
    y = np.asarray(inputs["audio"].data, np.float32)
    h = _forward(tiny_w2v, y, layer)
    t = np.asarray(talking_head.truth["frame_times"])
    for i in np.flatnonzero(r.mask)[::9]:
        k = np.arange(len(h))
        sel = (k * 0.02 >= t[i] - 1e-9) & (k * 0.02 < t[i] + 0.96 - 1e-9)
        np.testing.assert_allclose(r.data[i], h[sel].mean(0), atol=2e-4, rtol=1e-3)
    assert (r.data[~r.mask] == 0).all() and (~r.mask).any()


def test_chunk_s_is_semantic_and_pieces_join_on_the_20ms_grid(tiny_hubert: Path, talking_head) -> None:
    v, inputs = clip_inputs(talking_head)
    a = Speech(SpeechConfig(model=str(tiny_hubert), chunk_s=60.0))
    b = Speech(SpeechConfig(model=str(tiny_hubert), chunk_s=2.0))
    y = np.asarray(inputs["audio"].data, np.float32)
    ha, hb = a.track(y), b.track(y)
    assert abs(len(ha) - len(hb)) <= 2 * (len(y) // 32000 + 1) and abs(len(ha) - (len(y) - 400) // 320 - 1) <= 1
    assert a.semantic_config() != b.semantic_config()


def test_segments_encode_the_first_second_of_each_segment(tiny_hubert: Path, talking_head) -> None:
    v, inputs = clip_inputs(talking_head)
    st_times = np.array([[0.5, 2.5], [3.0, 3.4]])
    inputs["asr"] = MemoryEntry(StageResult(data=st_times, extras={
        "segments": np.array([" one", " two"]), "segment_times": st_times}, attrs={"present": True}), stage="asr")
    r = dense(SpeechSegments(SpeechSegmentsConfig(model=str(tiny_hubert))).compute(v, inputs))
    y = np.asarray(inputs["audio"].data, np.float32)
    want0 = _forward(tiny_hubert, y[8000:24000], "last").mean(0)
    t = np.asarray(talking_head.truth["frame_times"])
    in0, in1, out = (t >= 0.5) & (t < 2.5), (t >= 3.0) & (t < 3.4), (t < 0.5) | ((t >= 2.5) & (t < 3.0))
    np.testing.assert_allclose(r.data[in0][0], want0, atol=2e-4, rtol=1e-3)
    assert (r.data[in0] == r.data[in0][0]).all() and r.mask[in1].all() and not r.mask[out].any()
    assert not np.allclose(r.data[in0][0], r.data[in1][0])


def test_no_hub_and_no_cache_is_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError, match="hubert-base-ls960"):
        Speech(SpeechConfig()).weights_id()


def test_layer_option_is_checked() -> None:
    from avpipe.pipeline.config_schema import ConfigError, config_from_dict

    with pytest.raises((ConfigError, ValueError)):
        config_from_dict(SpeechConfig, {"layer": "middle"})
