"""Run a small Keras (2.x HDF5) image CNN in torch, without TensorFlow or Keras.

Why: several expression models that carry affect were released as Keras ``.hdf5`` files (the
FER2013 mini-Xception among them). Installing TensorFlow for a 0.9 MB network would more than
double avpipe's environment; the file itself is plain HDF5 — a JSON ``model_config`` (the layer
graph) and one dataset per weight — which h5py reads.

:func:`read_keras_h5` parses the file; :func:`build_module` interprets the functional graph in
torch for the layer types these models use (``InputLayer``, ``Conv2D``, ``SeparableConv2D``,
``BatchNormalization``, ``Activation``, ``MaxPooling2D``, ``AveragePooling2D``, ``Add``,
``GlobalAveragePooling2D``). Any other layer type, or a layer option the interpreter does not
implement (dilation, ``channels_first``, depth multiplier ≠ 1 …), is refused with
:class:`KerasFormatError` naming it — never run approximately.

Keras/TensorFlow conventions kept exactly:

* kernels are stored ``(kh, kw, in, out)`` (depthwise ``(kh, kw, in, multiplier)``), inputs NHWC;
* ``padding="same"`` is TensorFlow's: total padding ``max((ceil(n/s) − 1)·s + k − n, 0)`` split
  with the extra pixel at the *end* (bottom/right) — not torch's symmetric padding; max pooling
  ignores padded cells (padded with −inf), average pooling averages only real cells;
* batch normalisation in inference: ``γ (x − μ) / sqrt(σ² + ε) + β`` with the file's ε.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.pipeline.stage import StageError

SUPPORTED = ("InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation",
             "MaxPooling2D", "AveragePooling2D", "Add", "GlobalAveragePooling2D")
ACTIVATIONS = ("linear", "relu", "softmax", "sigmoid", "tanh")


class KerasFormatError(StageError):
    """The file is not a Keras HDF5 model this reader can run exactly (message says why)."""


@dataclass
class KerasLayer:
    """One layer of the functional graph: class, name, config, inbound layer names, weights."""

    kind: str
    name: str
    config: dict[str, Any]
    inbound: list[str]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class KerasModel:
    layers: list[KerasLayer]
    inputs: list[str]
    outputs: list[str]
    input_shape: tuple[int | None, ...]
    keras_version: str = ""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_keras_h5(path: str | Path) -> KerasModel:
    """Parse a Keras 2 functional model saved with ``model.save(...h5)`` (graph + weights)."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise KerasFormatError(f"{path}: not an HDF5 file ({e})") from None
    with f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise KerasFormatError(f"{path}: no Keras model_config/model_weights (not a Keras .h5 model)")
        cfg = json.loads(_text(f.attrs["model_config"]))
        if cfg.get("class_name") not in ("Model", "Functional"):
            raise KerasFormatError(f"{path}: a Keras {cfg.get('class_name')!r}; expected a functional Model")
        mw = f["model_weights"]
        layers: list[KerasLayer] = []
        for spec in cfg["config"]["layers"]:
            c = spec["config"]
            nodes = spec.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise KerasFormatError(f"{path}: layer {c['name']!r} is shared (called {len(nodes)} times)")
            inbound = [n[0] for n in nodes[0]] if nodes else []
            weights: dict[str, np.ndarray] = {}
            if c["name"] in mw:
                g = mw[c["name"]]
                for wn in g.attrs.get("weight_names", []):
                    wn = _text(wn)
                    key = wn.rsplit("/", 1)[-1].split(":")[0]  # ".../kernel:0" -> "kernel"
                    weights[key] = np.asarray(g[wn], np.float32)
            layers.append(KerasLayer(spec["class_name"], c["name"], c, inbound, weights))
        ins = [i[0] for i in cfg["config"].get("input_layers", [])]
        outs = [o[0] for o in cfg["config"].get("output_layers", [])]
        first = next((la for la in layers if la.kind == "InputLayer"), None)
        shape = tuple((first.config.get("batch_input_shape") or first.config.get("batch_shape") or [])
                      if first else ())
        return KerasModel(layers, ins, outs, shape, _text(f.attrs.get("keras_version", "")))


def same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's "same" padding along one axis: (before, after), the odd pixel after."""
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _check(la: KerasLayer, path: str) -> None:
    c = la.config
    if la.kind not in SUPPORTED:
        raise KerasFormatError(f"{path}: layer {la.name!r} of type {la.kind} is not supported "
                               f"(supported: {', '.join(SUPPORTED)})")
    if c.get("data_format", "channels_last") != "channels_last":
        raise KerasFormatError(f"{path}: layer {la.name!r} is channels_first")
    if any(d != 1 for d in c.get("dilation_rate", [1, 1])):
        raise KerasFormatError(f"{path}: layer {la.name!r} is dilated")
    if c.get("depth_multiplier", 1) != 1:
        raise KerasFormatError(f"{path}: layer {la.name!r} has depth_multiplier {c['depth_multiplier']}")
    if c.get("activation", "linear") not in ACTIVATIONS:
        raise KerasFormatError(f"{path}: layer {la.name!r} has activation {c['activation']!r}")
    if la.kind == "BatchNormalization" and c.get("axis", -1) not in (-1, 3, [3], [-1]):
        raise KerasFormatError(f"{path}: layer {la.name!r} normalises axis {c['axis']}")
    need = {"Conv2D": ["kernel"] + (["bias"] if c.get("use_bias", True) else []),
            "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if c.get("use_bias", True) else []),
            "BatchNormalization": ["moving_mean", "moving_variance"]}.get(la.kind, [])
    missing = [w for w in need if w not in la.weights]
    if missing:
        raise KerasFormatError(f"{path}: layer {la.name!r} lacks weights {missing}")


def build_module(model: KerasModel, path: str | Path = "keras model", taps: dict[str, str] | None = None) -> Any:
    """A torch module (eval, cpu) computing ``model``'s graph on NHWC float input.

    ``forward`` returns a dict: the model's outputs by layer name plus ``taps`` — extra named
    tensors, each ``{name: layer}`` giving that layer's output (e.g. the block before the
    classifier, for an embedding)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    for la in model.layers:
        _check(la, str(path))
    by_name = {la.name: la for la in model.layers}
    taps = dict(taps or {})
    for t, ln in taps.items():
        if ln not in by_name:
            raise KerasFormatError(f"{path}: no layer {ln!r} (for {t!r})")

    def act(x: torch.Tensor, name: str) -> torch.Tensor:
        if name == "relu":
            return F.relu(x)
        if name == "softmax":
            return torch.softmax(x, dim=-1 if x.dim() == 2 else 1)
        if name == "sigmoid":
            return torch.sigmoid(x)
        if name == "tanh":
            return torch.tanh(x)
        return x

    def pad_same(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], value: float = 0.0) -> torch.Tensor:
        ph = same_pad(x.shape[2], k[0], s[0])
        pw = same_pad(x.shape[3], k[1], s[1])
        if ph == (0, 0) and pw == (0, 0):
            return x
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)

    class KerasGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.params = nn.ParameterDict()
            for la in model.layers:
                for k, w in la.weights.items():
                    self.params[f"{la.name}__{k}"] = nn.Parameter(torch.from_numpy(w.copy()), requires_grad=False)

        def w(self, la: KerasLayer, k: str) -> torch.Tensor:
            return self.params[f"{la.name}__{k}"]

        def layer(self, la: KerasLayer, xs: list[torch.Tensor]) -> torch.Tensor:
            c = la.config
            if la.kind == "InputLayer":
                return xs[0]
            if la.kind == "Add":
                out = xs[0]
                for y in xs[1:]:
                    out = out + y
                return out
            x = xs[0]
            if la.kind == "GlobalAveragePooling2D":
                return act(x.mean(dim=(2, 3)), c.get("activation", "linear"))
            if la.kind == "Activation":
                return act(x, c["activation"])
            if la.kind == "BatchNormalization":
                n = x.shape[1]
                gamma = self.w(la, "gamma") if "gamma" in la.weights else torch.ones(n)
                beta = self.w(la, "beta") if "beta" in la.weights else torch.zeros(n)
                return F.batch_norm(x, self.w(la, "moving_mean"), self.w(la, "moving_variance"),
                                    gamma, beta, training=False, eps=float(c.get("epsilon", 1e-3)))
            k = tuple(c.get("kernel_size") or c.get("pool_size"))
            s = tuple(c.get("strides") or k)
            same = c.get("padding", "valid") == "same"
            if la.kind in ("MaxPooling2D", "AveragePooling2D"):
                if la.kind == "MaxPooling2D":
                    x = pad_same(x, k, s, float("-inf")) if same else x
                    return F.max_pool2d(x, k, s)
                if not same:
                    return F.avg_pool2d(x, k, s)
                ones = pad_same(torch.ones_like(x[:, :1]), k, s)
                return F.avg_pool2d(pad_same(x, k, s), k, s) / F.avg_pool2d(ones, k, s)
            x = pad_same(x, k, s) if same else x
            if la.kind == "Conv2D":
                w = self.w(la, "kernel").permute(3, 2, 0, 1)
                y = F.conv2d(x, w, self.w(la, "bias") if "bias" in la.weights else None, stride=s)
            else:  # SeparableConv2D: depthwise (stride here), then 1x1 pointwise
                dw = self.w(la, "depthwise_kernel").permute(2, 3, 0, 1)
                y = F.conv2d(x, dw, None, stride=s, groups=x.shape[1])
                pw = self.w(la, "pointwise_kernel").permute(3, 2, 0, 1)
                y = F.conv2d(y, pw, self.w(la, "bias") if "bias" in la.weights else None)
            return act(y, c.get("activation", "linear"))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            """``x``: (N, H, W, C) float, already preprocessed as the model expects."""
            vals: dict[str, torch.Tensor] = {}
            for la in model.layers:
                if la.kind == "InputLayer":
                    vals[la.name] = x.permute(0, 3, 1, 2)
                    continue
                vals[la.name] = self.layer(la, [vals[i] for i in la.inbound])
            out = {o: vals[o] for o in model.outputs}
            out.update({t: vals[ln] for t, ln in taps.items()})
            return out

    return KerasGraph().eval()
