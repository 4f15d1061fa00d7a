"""Backbone interface and registry (:mod:`avpipe.registry`, with a lazy table of the built-ins)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from avpipe.pipeline.stage import StageError
from avpipe.registry import Registry

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where crops are handled, not to list names
    import numpy as np


class BackboneUnavailable(StageError):
    """An optional dependency of a backbone is missing (message says which extra to install)."""


class Backbone(ABC):
    """One embedding model over aligned face crops.

    * ``name`` — registry name (enters the ``visual`` fingerprint through the config);
    * ``dim`` — embedding size;
    * ``weights_id(weights)`` — checksum of the weights in use (None: no weights); raises
      :class:`~avpipe.extractors.weights.WeightsMissingError` when they are absent — never a
      silent random fallback;
    * ``load(device, weights)`` — build the model once per worker;
    * ``embed(crops)`` — ``(N, S, S, 3)`` uint8 RGB → ``(N, dim)`` float32, deterministic.
    """

    name: ClassVar[str]
    dim: ClassVar[int]
    description: ClassVar[str] = ""
    weights_name: ClassVar[str | None] = None  # its entry in the weights registry (None: no weights)
    licence: ClassVar[str] = ""

    def weights_id(self, weights: dict[str, str]) -> str | None:
        return None

    def load(self, device: str, weights: dict[str, str]) -> None:
        """Build the model. Default: nothing to load."""

    @abstractmethod
    def embed(self, crops: np.ndarray) -> np.ndarray:
        ...


#: The built-in backbones: name -> "module:Class". Adding one is its module plus one line here
#: (docs/extending.md); names are listed and validated (``--backbone``, ``[stages.visual]``)
#: without importing any backbone module.
BUILTIN_BACKBONES: dict[str, str] = {
    "dlib": "avpipe.extractors.backbones.dlib_resnet:DlibResnet",
    "dlib-torch": "avpipe.extractors.backbones.dlib_torch:DlibTorch",
    "facenet-vggface2": "avpipe.extractors.backbones.facenet:FacenetVggface2",
    "fer2013-mini-xception": "avpipe.extractors.backbones.fer_xception:FerMiniXception",
    "fer2013-mini-xception-emb": "avpipe.extractors.backbones.fer_xception:FerMiniXceptionEmb",
    "fer2013-mini-xception-logits": "avpipe.extractors.backbones.fer_xception:FerMiniXceptionLogits",
    "hog": "avpipe.extractors.backbones.hog:HogBackbone",
    "hsemotion-enet-b0": "avpipe.extractors.backbones.face_models:HSEmotionB0",
    "hsemotion-enet-b0-va": "avpipe.extractors.backbones.face_models:HSEmotionB0VA",
    "hsemotion-enet-b2": "avpipe.extractors.backbones.face_models:HSEmotionB2",
    "ir50": "avpipe.extractors.backbones.face_models:IR50",
    "swin-base": "avpipe.extractors.backbones.face_models:SwinBase",
}


def _check_backbone(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Backbone)) or getattr(cls, "name", None) != name:
        raise TypeError(f"visual backbone {name!r}: {cls!r} is not a Backbone class named {name!r}")


BACKBONES: Registry[type[Backbone]] = Registry("visual backbone", BUILTIN_BACKBONES, check=_check_backbone)


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: make a backbone available by ``cls.name`` (same class again: no-op;
    another class under a taken name raises)."""
    return BACKBONES.register(cls.name, cls, dim=cls.dim, description=cls.description,
                              weights=cls.weights_name, licence=cls.licence)


def backbone_names() -> list[str]:
    """Every backbone name (built-in or registered), without importing a backbone module."""
    return BACKBONES.names()


def get_backbone(name: str) -> type[Backbone]:
    """The backbone class of ``name``; unknown: :class:`~avpipe.registry.UnknownNameError` (a
    KeyError) naming the closest known one."""
    return BACKBONES.get(name)


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    return get_backbone(name)(**kwargs)


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, S, S, 3) uint8 crops to ``size`` (area when shrinking, cubic when growing)."""
    import cv2
    import numpy as np

    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops]) if len(crops) \
        else np.zeros((0, size, size, 3), np.uint8)
