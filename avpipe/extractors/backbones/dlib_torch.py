"""dlib's face-recognition ResNet run in torch, from dlib's own weights file (``dlib-torch``).

Why: the ``dlib`` backbone runs through the ``dlib-bin`` wheel, which has no BLAS, so it is most
of an offline extraction on CPU. The same network in torch (oneDNN) gives the same 128-d
descriptors many times faster (BENCHMARKS.md, "Visual backbone: dlib vs dlib-torch", with the
command). The ``.dat`` file is read by :mod:`~avpipe.extractors.backbones.dlib_format` (no dlib
import), so only torch is needed.

The network (dlib's ``anet_type``): input ``(rgb - mean) / 256`` at 150×150; con 32 7×7/2,
affine, relu, max_pool 3×3/2; residual blocks (con 3×3, affine, relu, con 3×3, affine, + skip,
relu), where a downsampling block's first con has stride 2 and its skip is a 2×2/2 average pool of
the block input; a global average pool; fc 256→128 without bias. dlib's conventions kept exactly:
the paddings stored in the file (0 for strided layers, k/2 otherwise), and ``add_prev``'s sum of
two tensors of different sizes — the output takes the larger size in every dimension and each
input is zero-padded at the end (more channels on the main path; at 8×8 → the main path is 3×3,
the pooled skip 4×4). Each affine (a frozen batch norm) is folded into the con before it.

Agreement with dlib (5e-7 per component, tested < 1e-4) is measured on CPU. On CUDA, torch's
default TF32 convolutions (Ampere and later GPUs) round more coarsely; expect differences nearer
1e-3 there unless ``torch.backends.cudnn.allow_tf32`` is off.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avpipe.extractors.backbones.base import Backbone, register_backbone, resize_crops
from avpipe.extractors.backbones.dlib_format import DlibFormatError, DlibLayer, DlibNet, read_dlib_net
from avpipe.extractors.backbones.dlib_resnet import DlibResnet
from avpipe.extractors.weights import file_checksum

CHUNK = 64  # crops per forward pass: bounds activation memory (~0.7 MB per crop after the stem con)


def _kinds(layers: list[DlibLayer]) -> str:
    return ", ".join(la.kind for la in layers)


def build_module(net: DlibNet, path: Path | str = "dlib model") -> Any:
    """The torch module (eval mode, on cpu) of a parsed dlib face-recognition ResNet; raises
    :class:`DlibFormatError` when the layer sequence is not that network's."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv_affine(con: DlibLayer, aff: DlibLayer) -> nn.Conv2d:
        if con.kind != "con" or aff.kind != "affine" or aff.opts["channels"] != con.opts["num_filters"]:
            raise DlibFormatError(f"{path}: expected con then affine, found {con.kind}, {aff.kind}")
        w, b = con.arrays["weight"], con.arrays["bias"]
        g, beta = aff.arrays["gamma"], aff.arrays["beta"]
        o = con.opts
        m = nn.Conv2d(w.shape[1], w.shape[0], (o["nr"], o["nc"]), stride=(o["stride_y"], o["stride_x"]),
                      padding=(o["padding_y"], o["padding_x"]))
        with torch.no_grad():  # gamma * (W x + b) + beta  ==  (gamma W) x + (gamma b + beta)
            m.weight.copy_(torch.from_numpy(w * g[:, None, None, None]))
            m.bias.copy_(torch.from_numpy(b * g + beta))
        return m

    def pool_args(la: DlibLayer) -> dict[str, Any]:
        o = la.opts
        return {"kernel_size": (o["nr"], o["nc"]), "stride": (o["stride_y"], o["stride_x"]),
                "padding": (o["padding_y"], o["padding_x"])}

    class Block(nn.Module):
        """relu(con-affine-relu-con-affine(x) ⊕ skip(x)), ⊕ being dlib's zero-padding add."""

        def __init__(self, ls: list[DlibLayer]) -> None:
            super().__init__()
            self.c1, self.c2 = conv_affine(ls[0], ls[1]), conv_affine(ls[3], ls[4])
            self.pool = pool_args(ls[5]) if ls[5].kind == "avg_pool" else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.c2(F.relu(self.c1(x)))
            s = F.avg_pool2d(x, **self.pool) if self.pool else x
            if s.shape != y.shape:
                shape = [max(a, b) for a, b in zip(s.shape, y.shape)]

                def pad(t: torch.Tensor) -> torch.Tensor:
                    return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2],
                                     0, shape[1] - t.shape[1]))
                s, y = pad(s), pad(y)
            return F.relu(y + s)

    class DlibFaceResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            ls = net.layers
            if [la.kind for la in ls[:4]] != ["con", "affine", "relu", "max_pool"]:
                raise DlibFormatError(f"{path}: unexpected stem {_kinds(ls[:4])}")
            self.stem = conv_affine(ls[0], ls[1])
            self.stem_pool = pool_args(ls[3])
            blocks, i = [], 4
            while i < len(ls) and ls[i].kind == "con":
                down = ls[i + 5].kind == "avg_pool" if i + 5 < len(ls) else False
                n = 8 if down else 7
                want = ["con", "affine", "relu", "con", "affine"] + (["avg_pool"] if down else []) + \
                    ["add_prev", "relu"]
                if [la.kind for la in ls[i:i + n]] != want:
                    raise DlibFormatError(f"{path}: unexpected residual block at layer {i}: {_kinds(ls[i:i + n])}")
                blocks.append(Block(ls[i:i + n]))
                i += n
            self.blocks = nn.Sequential(*blocks)
            tail = ls[i:]
            if [la.kind for la in tail] != ["avg_pool", "fc"] or tail[0].opts["nr"] != 0 or \
                    "bias" in tail[1].arrays:
                raise DlibFormatError(f"{path}: expected avg_pool_everything then fc_no_bias at the end, "
                                      f"found {_kinds(tail)}")
            w = tail[1].arrays["weight"]  # (inputs, outputs): dlib computes x @ W
            self.fc = nn.Linear(w.shape[0], w.shape[1], bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            self.register_buffer("mean", torch.tensor(net.input_mean, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """``x``: (N, 3, 150, 150) float RGB in 0..255 → (N, 128) descriptors."""
            x = F.relu(self.stem((x - self.mean) / 256.0))
            x = F.max_pool2d(x, **self.stem_pool)
            x = self.blocks(x)
            return self.fc(x.mean(dim=(2, 3)))

    return DlibFaceResNet().eval()


@register_backbone
class DlibTorch(Backbone):
    name = "dlib-torch"
    weights_name = "dlib-resnet"
    licence = "CC0 (weights)"
    dim = 128
    description = ("dlib face-recognition ResNet v1 run in torch from dlib's own weights file, 128-d, "
                   "on 150x150 resized aligned crops (same descriptors as 'dlib', faster)")

    def __init__(self) -> None:
        self._model: Any = None
        self._device = "cpu"

    def _path(self, weights: dict[str, str]) -> Path:
        return DlibResnet()._path(weights)  # the same file and --weights names as 'dlib'

    def weights_id(self, weights: dict[str, str]) -> str | None:
        return file_checksum(self._path(weights))

    def load(self, device: str, weights: dict[str, str]) -> None:
        import torch

        path = self._path(weights)
        net = read_dlib_net(path)
        if net.input_size not in (None, (150, 150)):
            raise DlibFormatError(f"{path}: expected a 150x150 input layer, found {net.input_size}")
        model = build_module(net, path)
        try:  # one tiny pass: a file whose layers do not chain fails here, not mid-extraction
            with torch.inference_mode():
                dim = model(torch.zeros(1, 3, 150, 150)).shape[1]
        except RuntimeError as e:
            raise DlibFormatError(f"{path}: its layers' shapes do not chain ({e})") from None
        if dim != self.dim:
            raise DlibFormatError(f"{path}: the network gives {dim}-d descriptors, expected {self.dim}")
        self._device = device
        self._model = model.to(device)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            self.load("cpu", {})
        chips = resize_crops(np.asarray(crops, np.uint8), 150)
        out = np.zeros((len(chips), self.dim), np.float32)
        with torch.inference_mode():
            for s in range(0, len(chips), CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(chips[s:s + CHUNK])).to(self._device)
                # NHWC memory permuted: oneDNN gets a channels_last input; converting the module to
                # channels_last as well measured no faster (same CPU time per crop on one core).
                x = x.permute(0, 3, 1, 2).float()
                out[s:s + CHUNK] = self._model(x).float().cpu().numpy()
        return out
