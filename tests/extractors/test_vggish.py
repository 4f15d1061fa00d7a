"""vggish: the project's network loads the torchvggish state_dict layout; never random weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avpipe.extractors.vggish import VGGishConfig, VGGishStage, build_vggish
from avpipe.extractors.weights import WeightsMissingError
from avpipe.pipeline.stage import Runtime

from .test_audio import clip_inputs

PORT_KEYS = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")} | \
            {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    import torch

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("vggish")
    m = build_vggish()
    torch.save(m.state_dict(), d / "vggish.pth")
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    torch.save({"pca_eigen_vectors": q.astype(np.float32), "pca_means": rng.standard_normal((128, 1))},
               d / "pca.pth")
    return d / "vggish.pth", d / "pca.pth"


def test_state_dict_names_match_the_port() -> None:
    sd = build_vggish().state_dict()
    assert set(sd) == PORT_KEYS
    assert tuple(sd["embeddings.0.weight"].shape) == (4096, 512 * 4 * 6)
    assert tuple(sd["features.13.weight"].shape) == (512, 512, 3, 3)


def test_missing_weights_one_clear_error(tmp_path: Path, monkeypatch, two_faces_tone) -> None:
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import avpipe.extractors.weights as w

    def offline(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise OSError("network blocked in tests")

    monkeypatch.setattr("socket.create_connection", offline)
    monkeypatch.setattr("socket.socket.connect", offline)
    with pytest.raises(WeightsMissingError) as ei:
        VGGishStage().weights_id()
    msg = str(ei.value)
    assert "no network access to github.com" in msg and "--weights vggish=PATH" in msg
    assert str(w.avpipe_home() / "weights" / "vggish-10086976.pth") in msg
    v, inputs = clip_inputs(two_faces_tone)
    with pytest.raises(WeightsMissingError):
        VGGishStage().compute(v, inputs)


def test_embeds_each_frame(weights, two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    rt = Runtime(device="cpu", batch_size=16, weights={"vggish": str(weights[0])})
    st = VGGishStage(runtime=rt)
    r = st.compute(v, inputs)
    assert r.data.shape == (50, 128) and r.data.dtype == np.float32
    assert r.mask[:30].all() and (r.data[r.mask] >= 0).all()  # final ReLU, as in the port
    # rows differ where the audio differs (tone in or out of the window)
    assert not np.allclose(r.data[5], r.data[40])
    assert r.attrs["window_s"] == 0.96 and r.attrs["anchor"] == "forward"
    # same patch -> same embedding regardless of batching
    r2 = VGGishStage(runtime=Runtime(device="cpu", batch_size=7, weights=rt.weights)).compute(v, inputs)
    np.testing.assert_allclose(r.data, r2.data, rtol=1e-4, atol=1e-5)


def test_pca_and_quantize(weights, two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    rt = Runtime(device="cpu", weights={"vggish": str(weights[0]), "vggish-pca": str(weights[1])})
    r = VGGishStage(VGGishConfig(pca=True, quantize=True), rt).compute(v, inputs)
    d = r.data[r.mask]
    assert d.min() >= 0 and d.max() <= 255 and np.allclose(d, np.round(d))
    st = VGGishStage(VGGishConfig(pca=True), rt)
    assert "+" in st.weights_id()  # both files identify the output


def test_no_audio_masked_without_loading(weights, no_face_no_audio) -> None:
    v, inputs = clip_inputs(no_face_no_audio)
    r = VGGishStage(runtime=Runtime(weights={"vggish": str(weights[0])})).compute(v, inputs)
    assert r.data.shape == (38, 128) and not r.mask.any()


def test_weights_file_is_never_unpickled_as_arbitrary_objects(tmp_path):
    """A user-supplied weights file that smuggles a callable must be refused, not executed."""
    import os
    import pickle

    import numpy as np
    import torch

    from avpipe.extractors.vggish import load_state

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"features.0.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsMissingError) as ei:  # refused by weights_only, reported as one error
        load_state(tmp_path / "evil.pth")
    assert isinstance(ei.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()
    # The port's PCA file holds numpy arrays: those still load.
    torch.save({"pca_means": np.zeros((128, 1))}, tmp_path / "pca.pth")
    assert load_state(tmp_path / "pca.pth")["pca_means"].shape == (128, 1)


@pytest.mark.parametrize("body", [b"not a checkpoint\n", b""])
def test_a_file_that_is_not_weights_is_one_clear_error(tmp_path: Path, two_faces_tone, body) -> None:
    """`--weights vggish=wrong_file`: a message naming the file, not torch's advice to load
    it with weights_only=False."""
    bad = tmp_path / "wrong.pth"
    bad.write_bytes(body)
    st = VGGishStage(runtime=Runtime(device="cpu", weights={"vggish": str(bad)}))
    with pytest.raises(WeightsMissingError) as ei:
        st.load()
    msg = str(ei.value)
    assert str(bad) in msg and "--weights vggish=PATH" in msg
    assert "weights_only` set to `False`" not in msg and "Re-running" not in msg
