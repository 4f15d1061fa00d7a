"""Reader for dlib's binary serialization of its face-recognition ResNet, without dlib.

Why: the ``dlib-torch`` backbone runs dlib's network in torch (oneDNN/MKL: many times faster than
the BLAS-less ``dlib-bin`` wheel) from the very same ``.dat`` file, so dlib stays optional and
the weights stay the ones users already have. Nothing is unpickled or evaluated: the file is
read field by field, each version/layer-name string is checked against what dlib writes, and any
deviation (another network, a truncated file, a non-dlib file) raises :class:`DlibFormatError`
naming the file and what was found.

dlib's encoding (``dlib/serialize.h``, ``dlib/cuda/tensor.h``, ``dlib/dnn/core.h``):

* integers: one control byte (low nibble: number of bytes, bit 7: negative) then the magnitude's
  bytes, little-endian;
* ``bool``: the ASCII character ``'1'`` or ``'0'``;
* ``std::string``: its length (integer) then the bytes;
* ``float``: mantissa (int64) and exponent (int16) as integers: value = mantissa * 2**exponent;
* tensor: version 2, then num_samples, k, nr, nc, then the values as raw little-endian float32;
  an alias tensor (a view into a layer's params): version 1, then its four sizes;
* a network is written outermost first: ``add_loss_layer`` (version 1, loss details, subnet);
  each ``add_layer`` writes its version (2; 3 for the one directly on the input layer), then its
  subnetwork, then its layer details and state; tag and skip layers write version 1 and their
  subnetwork only. So the file is: all wrapper versions (outermost first), the input layer, then
  each layer's details from the input upwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avpipe.extractors.weights import WeightsMissingError


class DlibFormatError(WeightsMissingError):
    """The file is not a dlib face-recognition ResNet in the format this reader understands."""


@dataclass
class DlibLayer:
    """One computational layer as dlib stored it: its kind (``con``, ``affine``, ``relu``,
    ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``), its integer options and float32 arrays."""

    kind: str
    opts: dict[str, int] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed network: input means (RGB, 0..255 scale), input size, the computational layers from
    the input upwards, and the wrapper versions (outermost first: 2 layer, 1 tag/skip, 3 first)."""

    input_mean: tuple[float, float, float]
    input_size: tuple[int, int] | None
    layers: list[DlibLayer]
    wrappers: list[int]
    loss: str


class _Reader:
    """Cursor over the file's bytes; every read checks bounds (a truncated file is one clear error)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.path} is not a dlib face-recognition ResNet file this reader understands: "
            f"{what} (at byte {self.pos} of {len(self.data)})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what} (truncated?)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int_(self, what: str, max_bytes: int = 8) -> int:
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size > max_bytes:
            raise self.fail(f"bad integer encoding for {what} (control byte 0x{ctrl:02x})")
        v = int.from_bytes(self.take(size, what), "little")
        return -v if ctrl & 0x80 else v

    def bool_(self, what: str) -> bool:
        c = self.take(1, what)
        if c not in (b"0", b"1"):
            raise self.fail(f"expected a bool ('0'/'1') for {what}, found {c!r}")
        return c == b"1"

    def str_(self, what: str, max_len: int = 64) -> str:
        n = self.int_(f"length of {what}")
        if n > max_len:
            raise self.fail(f"expected the {what} string, found a length of {n}")
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"expected the {what} string, found bytes {raw[:20]!r}") from None

    def expect_str(self, allowed: tuple[str, ...], what: str) -> str:
        s = self.str_(what)
        if s not in allowed:
            raise self.fail(f"expected {what} {' or '.join(repr(a) for a in allowed)}, found {s!r}")
        return s

    def float_(self, what: str) -> float:
        mantissa = self.int_(f"mantissa of {what}")
        exponent = self.int_(f"exponent of {what}", max_bytes=2)
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}  # dlib's float_details codes
        if exponent in special:
            return special[exponent]
        return math.ldexp(mantissa, exponent)

    def version(self, expected: tuple[int, ...], what: str) -> int:
        v = self.int_(f"version of {what}")
        if v not in expected:
            raise self.fail(f"expected {what} version {' or '.join(map(str, expected))}, found {v}")
        return v

    def tensor(self, what: str) -> np.ndarray:
        self.version((2,), f"tensor {what}")
        shape = tuple(self.int_(f"size of tensor {what}") for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative size {shape} of tensor {what}")
        n = math.prod(shape)
        raw = self.take(4 * n, f"tensor {what} ({n} floats)")
        return np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.version((1,), f"alias tensor {what}")
        return tuple(self.int_(f"size of alias {what}") for _ in range(4))  # type: ignore[return-value]


def _slice(params: np.ndarray, offset: int, shape: tuple[int, ...], r: _Reader, what: str) -> np.ndarray:
    flat = params.reshape(-1)
    n = math.prod(shape)
    if offset + n > flat.size:
        raise r.fail(f"{what} {shape} does not fit in its layer's {flat.size} parameters")
    return flat[offset:offset + n].reshape(shape).copy()


def _read_details(r: _Reader) -> DlibLayer:
    name = r.str_("layer name")
    if name == "con_4":
        params = r.tensor("con params")
        o = {k: r.int_(f"con {k}") for k in ("num_filters", "nr", "nc", "stride_y", "stride_x",
                                                 "padding_y", "padding_x")}
        fshape, bshape = r.alias("con filters"), r.alias("con biases")
        for k in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                  "bias_weight_decay_multiplier"):
            r.float_(f"con {k}")
        w = _slice(params, 0, fshape, r, "con filters")
        b = _slice(params, w.size, (bshape[1],), r, "con biases")
        if fshape[0] != o["num_filters"] or fshape[2:] != (o["nr"], o["nc"]) or b.size != o["num_filters"]:
            raise r.fail(f"con filters {fshape} / biases {bshape} disagree with its options {o}")
        return DlibLayer("con", o, {"weight": w, "bias": b})
    if name in ("affine_", "affine_2"):
        params = r.tensor("affine params")
        g, bt = r.alias("affine gamma"), r.alias("affine beta")
        mode = r.int_("affine mode")
        if name == "affine_2":
            r.bool_("affine disabled")
        if mode != 0 or g[0] != 1 or g[2:] != (1, 1) or g != bt:  # CONV_MODE (0): one gamma/beta per channel
            raise r.fail(f"expected a per-channel (conv mode) affine layer, found mode {mode}, gamma {g}")
        gamma = _slice(params, 0, (g[1],), r, "affine gamma")
        beta = _slice(params, g[1], (g[1],), r, "affine beta")
        return DlibLayer("affine", {"channels": g[1]}, {"gamma": gamma, "beta": beta})
    if name == "relu_":
        return DlibLayer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        o = {k: r.int_(f"{name} {k}") for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        return DlibLayer(name[:-2], o)
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name == "fc_2":
        n_out, n_in = r.int_("fc num_outputs"), r.int_("fc num_inputs")
        params = r.tensor("fc params")
        wshape, bshape = r.alias("fc weights"), r.alias("fc biases")
        bias_mode = r.int_("fc bias mode")
        for k in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                  "bias_weight_decay_multiplier"):
            r.float_(f"fc {k}")
        if wshape != (n_in, n_out, 1, 1):
            raise r.fail(f"fc weights {wshape} disagree with {n_in} inputs, {n_out} outputs")
        arrays = {"weight": _slice(params, 0, (n_in, n_out), r, "fc weights")}  # x @ W (dlib layout)
        if bias_mode == 0:  # FC_HAS_BIAS
            arrays["bias"] = _slice(params, n_in * n_out, (n_out,), r, "fc biases")
        elif bias_mode != 1:
            raise r.fail(f"unknown fc bias mode {bias_mode}")
        return DlibLayer("fc", {"num_outputs": n_out, "num_inputs": n_in}, arrays)
    raise r.fail(f"unexpected layer {name!r} (this reader knows con_4, affine_, relu_, max_pool_2, "
                 f"avg_pool_2, add_prev_, fc_2)")


def _layer_state(r: _Reader, first: bool) -> None:
    """The per-layer training state ``add_layer`` writes after the details (not needed to run)."""
    for k in ("this_layer_setup_called", "gradient_input_is_stale", "output_disabled"):
        r.bool_(k)
    for k in ("x_grad", "cached_output", "grad_final" if first else "params_grad"):
        r.tensor(k)
    if first:
        r.int_("sample_expansion_factor")


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a dlib ``loss_metric`` network file (e.g. ``dlib_face_recognition_resnet_model_v1.dat``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DlibFormatError(f"cannot read dlib model file {path}: {e.strerror or e}") from e
    r = _Reader(data, path)
    r.version((1,), "add_loss_layer")
    loss = r.expect_str(("loss_metric_2",), "loss layer")
    r.float_("loss margin")
    r.float_("loss distance threshold")
    wrappers: list[int] = []
    while True:  # versions of the wrappers, outermost first, down to the one on the input layer
        v = r.version((1, 2, 3), "layer wrapper")
        wrappers.append(v)
        if v == 3:
            break
        if len(wrappers) > 10_000:
            raise r.fail("no input layer after 10000 layer wrappers")
    kind = r.expect_str(("input_rgb_image_sized", "input_rgb_image"), "input layer")
    mean = (r.float_("avg_red"), r.float_("avg_green"), r.float_("avg_blue"))
    size = (r.int_("input rows"), r.int_("input cols")) if kind == "input_rgb_image_sized" else None
    layers = [_read_details(r)]
    _layer_state(r, first=True)
    for v in reversed(wrappers[:-1]):
        if v == 2:  # add_layer: details then state; tag/skip layers (1) wrote nothing after
            layers.append(_read_details(r))
            _layer_state(r, first=False)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected bytes after the network")
    return DlibNet(mean, size, layers, wrappers, loss)

