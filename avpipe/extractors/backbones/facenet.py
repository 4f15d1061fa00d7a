"""FaceNet InceptionResnetV1 trained on VGGFace2 (facenet-pytorch), 512-d, L2-normalised.

Weights: ``20180402-114759-vggface2.pt`` — looked for under ``$AVPIPE_HOME/weights``, then in
torch hub's cache (``$TORCH_HOME/checkpoints``, where facenet-pytorch's own download puts it);
obtained online through facenet-pytorch's download; or given with
``--weights facenet-vggface2=PATH``. Offline without the file the stage fails with one
:class:`WeightsMissingError` naming all that. Random weights exist only through the explicit
``random_init_for_tests=True`` constructor flag, which the ``visual`` stage never passes.

Input: crops resized to 160×160, standardised as facenet-pytorch does ((x − 127.5) / 128).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avpipe.extractors.backbones.base import Backbone, register_backbone, resize_crops
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, file_checksum, load_weights_file,
                                       register_weights, resolve_weights)

FACENET_FILE = "20180402-114759-vggface2.pt"
FACENET_URL = ("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" + FACENET_FILE)


def torch_home() -> Path:
    return Path(os.path.expanduser(os.getenv(
        "TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))))


def _locate() -> Path | None:
    p = torch_home() / "checkpoints" / FACENET_FILE
    return p if p.exists() else None


def _obtain() -> Path:
    from facenet_pytorch.models.utils.download import download_url_to_file

    dst = torch_home() / "checkpoints" / FACENET_FILE
    dst.parent.mkdir(parents=True, exist_ok=True)
    download_url_to_file(FACENET_URL, str(dst))
    return dst


register_weights(WeightSpec(
    name="facenet-vggface2", filename=FACENET_FILE, source="download", url=FACENET_URL,
    package="facenet-pytorch",
    description="FaceNet InceptionResnetV1 VGGFace2 state_dict (facenet-pytorch)",
    how=(f"download {FACENET_URL} and put it at $TORCH_HOME/checkpoints/{FACENET_FILE} "
         f"(now {torch_home() / 'checkpoints' / FACENET_FILE})"),
    locate=_locate, obtain=_obtain))


@register_backbone
class FacenetVggface2(Backbone):
    name = "facenet-vggface2"
    dim = 512
    description = "FaceNet InceptionResnetV1 (VGGFace2), 512-d, 160x160 input"
    weights_name = "facenet-vggface2"
    licence = "MIT (facenet-pytorch)"

    def __init__(self, *, random_init_for_tests: bool = False) -> None:
        self.random_init_for_tests = random_init_for_tests
        self._model = None
        self._device = "cpu"

    def _path(self, weights: dict[str, str]) -> Path:
        return resolve_weights("facenet-vggface2", weights.get("facenet-vggface2"))

    def weights_id(self, weights: dict[str, str]) -> str | None:
        if self.random_init_for_tests:
            return "random-init-for-tests"
        return file_checksum(self._path(weights))

    def load(self, device: str, weights: dict[str, str]) -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        model = InceptionResnetV1(pretrained=None, classify=False)
        if self.random_init_for_tests:
            torch.manual_seed(0)
            model = InceptionResnetV1(pretrained=None, classify=False)
        else:
            path = self._path(weights)
            state = load_weights_file(path, what="a FaceNet weights file",
                                      expected="give facenet-pytorch's VGGFace2 state_dict "
                                               "(20180402-114759-vggface2.pt) with --weights facenet-vggface2=PATH")
            if not isinstance(state, dict):
                raise WeightsMissingError(f"{path} is not a facenet-vggface2 state_dict (it holds a "
                                          f"{type(state).__name__})")
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing:
                raise WeightsMissingError(
                    f"{path} is not a facenet-vggface2 state_dict: missing {len(missing)} keys "
                    f"(e.g. {missing[:3]})")
        self._device = device
        self._model = model.eval().to(device)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            raise RuntimeError("facenet-vggface2: call load() first")
        x = resize_crops(np.asarray(crops, np.uint8), 160)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        t = torch.from_numpy(x).to(self._device).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            out = self._model((t - 127.5) / 128.0)
        return out.float().cpu().numpy()
