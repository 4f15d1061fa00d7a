"""Per-frame image backbones of the seed papers and ABAW labs (weights from hubs at first use).

* ``ir50`` — the "IR" ResNet-50 of face.evoLVe / ArcFace (Deng et al.) that RJCMA uses per
  frame, from a checkpoint the user gives (RJCMA's authors name ``res50_ir_0.887``, trained on
  expression data; face.evoLVe's ``backbone_ir50_ms1m_epoch120.pth`` has the same layout). The
  input side follows the checkpoint: its output layer is Linear(512·s·s → 512), so crops are
  resized to 16·s (112 for s = 7). 512-d, input normalised to [−1, 1].
* ``hsemotion-enet-b0`` / ``hsemotion-enet-b0-va`` — Savchenko's AffectNet-trained EfficientNet-B0
  (HSEmotion / EmotiEffLib ``enet_b0_8_va_mtl.pt``: 8 expressions + valence + arousal): the
  1280-d pooled features, or the valence/arousal head's two outputs. ``hsemotion-enet-b2`` — the
  B2 model ``enet_b2_8.pt`` (1408-d features, 260×260 input). The releases are pickled whole
  timm models; their weights are read without unpickling code
  (:mod:`~avpipe.extractors.backbones.checkpoints`) into timm's architecture.
* ``swin-base`` — timm's ``swin_base_patch4_window7_224`` (ImageNet-22k, fine-tuned on 1k; the
  model MAVEN uses), 1024-d pooled features, from the Hugging Face hub's safetensors.

timm is the optional extra ``vision``. All weights go through the registry (``avpipe models
list``); a missing file is one :class:`WeightsMissingError`, never random weights.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avpipe.extractors.backbones.base import Backbone, BackboneUnavailable, register_backbone, resize_crops
from avpipe.extractors.backbones.checkpoints import read_state_dict
from avpipe.extractors.backbones.clips import load_exact
from avpipe.extractors.hub import hub_spec
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, file_checksum, register_weights,
                                       resolve_weights, torch_hub_checkpoints)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HSE_URL = "https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/models/affectnet_emotions/"
VISION_HINT = "pip install 'avpipe[vision]' (timm)"
CHUNK = 32


def _hub_file(fname: str, url: str) -> WeightSpec:
    def locate() -> Path | None:
        p = torch_hub_checkpoints() / fname
        return p if p.exists() else None

    def obtain() -> Path:
        import torch.hub

        dst = torch_hub_checkpoints() / fname
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(dst), progress=False)
        except (OSError, RuntimeError) as e:
            raise WeightsMissingError(f"could not download {url} ({type(e).__name__}: {e})") from None
        return dst

    return WeightSpec(name="", filename=fname, source="download", url=url, locate=locate, obtain=obtain)


def _register_hse(name: str, fname: str, description: str) -> None:
    base = _hub_file(fname, HSE_URL + fname)
    register_weights(WeightSpec(
        name=name, filename=fname, source="download", url=base.url, package="hsemotion / emotiefflib",
        description=description, locate=base.locate, obtain=base.obtain,
        how=f"download {base.url} into $TORCH_HOME/hub/checkpoints/ (or --weights {name}=PATH)"))


_register_hse("hsemotion-enet-b0-8-va-mtl", "enet_b0_8_va_mtl.pt",
              "HSEmotion EfficientNet-B0, AffectNet 8 expressions + valence/arousal (Apache-2.0)")
_register_hse("hsemotion-enet-b2-8", "enet_b2_8.pt", "HSEmotion EfficientNet-B2, AffectNet 8 expressions (Apache-2.0)")
register_weights(WeightSpec(
    name="ir50", filename="ir50.pth", source="user",
    description="IR-50 face ResNet (face.evoLVe layout), e.g. RJCMA's res50_ir_0.887 or backbone_ir50_ms1m_epoch120",
    how="pass --weights ir50=PATH (a state_dict or a pickled model; its tensors are read without running it)"))
SWIN_REPO = "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k"
hub_spec("swin-base-patch4-window7-224", SWIN_REPO, "Swin-B 224, ImageNet-22k fine-tuned on 1k (timm; MIT)")


def to_tensor(crops: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...], device: str) -> Any:
    import torch

    x = resize_crops(np.asarray(crops, np.uint8), size)
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (t - m) / s


class _Torch(Backbone):
    """Shared: resolve weights, build, load, run in chunks."""

    mean: ClassVar[tuple[float, ...]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = IMAGENET_STD

    def __init__(self) -> None:
        self._model: Any = None
        self._device = "cpu"
        self._size = 224

    def _path(self, weights: dict[str, str]) -> Path:
        return resolve_weights(self.weights_name, weights.get(self.weights_name))

    def weights_id(self, weights: dict[str, str]) -> str | None:
        return file_checksum(self._path(weights))

    def build(self, sd: dict[str, Any], path: Path) -> Any:
        raise NotImplementedError

    def load(self, device: str, weights: dict[str, str]) -> None:
        path = self._path(weights)
        sd = self.read(path)
        self._model = self.build(sd, path).eval().to(device)
        self._device = device

    def read(self, path: Path) -> dict[str, Any]:
        return read_state_dict(path, what=f"a {self.name} checkpoint")

    def forward(self, x: Any) -> Any:
        return self._model(x)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            self.load("cpu", {})
        out = np.zeros((len(crops), self.dim), np.float32)
        with torch.inference_mode():
            for s in range(0, len(crops), CHUNK):
                x = to_tensor(crops[s:s + CHUNK], self._size, self.mean, self.std, self._device)
                out[s:s + CHUNK] = self.forward(x).float().cpu().numpy()
        return out


def build_ir50(side: int = 7) -> Any:
    """face.evoLVe's IR-50 for an input side of 16·``side`` (see :mod:`.ir50_net`)."""
    from avpipe.extractors.backbones.ir50_net import IR50 as Net

    return Net(side)


@register_backbone
class IR50(_Torch):
    name = "ir50"
    dim = 512
    weights_name = "ir50"
    licence = "as its authors distribute it (face.evoLVe code: MIT)"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    description = "IR-50 (ArcFace-style ResNet-50, face.evoLVe layout) from your checkpoint, 512-d"

    def build(self, sd: dict[str, Any], path: Path) -> Any:
        key = next((k for k in sd if k.endswith("output_layer.3.weight")), None)
        if key is None:
            raise WeightsMissingError(f"{path} is not an IR-50 checkpoint (no output_layer.3.weight)")
        side = int(round(math.sqrt(sd[key].shape[1] / 512)))
        if 512 * side * side != sd[key].shape[1]:
            raise WeightsMissingError(f"{path}: output layer takes {sd[key].shape[1]} inputs, not 512·s·s")
        model = build_ir50(side)
        load_exact(model, sd, path, "IR-50")
        self._size = 16 * side
        return model


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise BackboneUnavailable(f"this backbone needs timm: {VISION_HINT}") from e
    return timm


class _HSEmotion(_Torch):
    arch: ClassVar[str]
    size: ClassVar[int]
    output: ClassVar[str] = "features"
    licence = "Apache-2.0 (HSEmotion / EmotiEffLib)"

    def build(self, sd: dict[str, Any], path: Path) -> Any:
        import torch

        model = _timm().create_model(self.arch, pretrained=False, num_classes=0)
        w = sd.get("classifier.weight", sd.get("classifier.0.weight"))
        b = sd.get("classifier.bias", sd.get("classifier.0.bias"))
        load_exact(model, {k: v for k, v in sd.items() if not k.startswith("classifier")}, path,
                   f"HSEmotion {self.arch}")
        if w is None:
            raise WeightsMissingError(f"{path}: no classifier weights (not an HSEmotion model)")
        self.head = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(b if b is not None else torch.zeros(w.shape[0]))
        if self.output == "va" and w.shape[0] < 10:
            raise WeightsMissingError(f"{path}: {w.shape[0]} outputs; the valence/arousal head needs an "
                                      "'_va_mtl' model (8 expressions + valence + arousal)")
        self._size = self.size
        return model

    def load(self, device: str, weights: dict[str, str]) -> None:
        super().load(device, weights)
        self.head = self.head.eval().to(device)

    def forward(self, x: Any) -> Any:
        f = self._model(x)
        return self.head(f)[:, -2:] if self.output == "va" else f


@register_backbone
class HSEmotionB0(_HSEmotion):
    name = "hsemotion-enet-b0"
    dim = 1280
    arch = "tf_efficientnet_b0"
    size = 224
    weights_name = "hsemotion-enet-b0-8-va-mtl"
    description = "HSEmotion EfficientNet-B0 (AffectNet, 8 expressions + VA) pooled features, 1280-d, 224x224"


@register_backbone
class HSEmotionB0VA(HSEmotionB0):
    name = "hsemotion-enet-b0-va"
    dim = 2
    output = "va"
    description = "HSEmotion EfficientNet-B0 valence/arousal head outputs (2), 224x224"


@register_backbone
class HSEmotionB2(_HSEmotion):
    name = "hsemotion-enet-b2"
    dim = 1408
    arch = "tf_efficientnet_b2"
    size = 260
    weights_name = "hsemotion-enet-b2-8"
    description = "HSEmotion EfficientNet-B2 (AffectNet, 8 expressions) pooled features, 1408-d, 260x260"


@register_backbone
class SwinBase(_Torch):
    name = "swin-base"
    dim = 1024
    weights_name = "swin-base-patch4-window7-224"
    licence = "MIT (Swin; timm)"
    description = "Swin-B patch4 window7 224 (timm, ImageNet-22k->1k) pooled features, 1024-d (MAVEN)"

    def read(self, path: Path) -> dict[str, Any]:
        if path.is_dir():
            from safetensors.torch import load_file

            f = path / "model.safetensors"
            if not f.exists():
                raise WeightsMissingError(f"{path}: no model.safetensors")
            return load_file(str(f))
        return super().read(path)

    def build(self, sd: dict[str, Any], path: Path) -> Any:
        model = _timm().create_model("swin_base_patch4_window7_224", pretrained=False, num_classes=0)
        load_exact(model, sd, path, "Swin-B", ignore=("head.fc.",))
        self._size = 224
        return model
