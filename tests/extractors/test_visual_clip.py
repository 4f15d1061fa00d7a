"""visual_clip: clips of face crops through R(2+1)D-18 / I3D, loaded from checkpoints written here
(never random weights presented as pretrained), against torchvision's own forward."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.extractors.backbones.clips import (CLIP_BACKBONES, KINETICS_MEAN, KINETICS_STD, build_i3d,
                                               create_clip_backbone)
from avpipe.extractors.visual_clip import VisualClip, VisualClipConfig, clip_indices
from avpipe.extractors.weights import WeightsMissingError, downloads_disabled
from avpipe.pipeline.chunks import dense
from avpipe.pipeline.entry import MemoryEntry
from avpipe.pipeline.stage import Runtime, StageResult


@pytest.fixture(scope="module")
def tsav_ckpt(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """An R(2+1)D-18 checkpoint as a training script saves one: wrapped (``module.`` prefix),
    with a head of its own; the reference network keeps the same weights."""
    from torchvision.models.video import r2plus1d_18

    torch.manual_seed(0)
    ref = r2plus1d_18(weights=None, num_classes=2).eval()
    for m in ref.modules():  # non-trivial batch-norm statistics, so loading them is checked
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    p = tmp_path_factory.mktemp("ck") / "tsav.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, p)
    return p, ref


def _faces(n: int = 12, s: int = 112, seed: int = 3) -> MemoryEntry:
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    mask = np.ones(n, bool)
    mask[5] = False
    return MemoryEntry(StageResult(data=np.zeros((n, 17), np.float32), mask=mask, extras={"crops": crops}),
                       stage="faces")


def test_clip_indices_causal_and_centered_clamped() -> None:
    c = clip_indices(10, 4, 2, "causal")
    assert c[9].tolist() == [3, 5, 7, 9] and c[0].tolist() == [0, 0, 0, 0] and c[3].tolist() == [0, 0, 1, 3]
    m = clip_indices(10, 3, 1, "centered")
    assert m[4].tolist() == [3, 4, 5] and m[9].tolist() == [8, 9, 9]


def test_r2plus1d_rows_equal_torchvision_forward_on_the_same_clips(tsav_ckpt) -> None:
    path, ref = tsav_ckpt
    faces = _faces()
    st = VisualClip(VisualClipConfig(backbone="r2plus1d-18-tsav", clip_frames=4, frame_step=2),
                    Runtime(device="cpu", batch_size=3, weights={"r2plus1d-18-tsav": str(path)}))
    r = dense(st.compute(None, {"faces": faces}))
    assert r.data.shape == (12, 512) and r.attrs["dim"] == 512
    crops = faces.extra("crops").copy()
    crops[~faces.mask] = 0
    # frame 5 has no face: its row is masked zeros; frame 7's clip (1, 3, 5, 7) holds a black crop
    assert not r.mask[5] and not r.data[5].any() and r.mask[7]
    idx = clip_indices(12, 4, 2, "causal")
    x = torch.from_numpy(crops[idx[[0, 7, 11]]]).permute(0, 4, 1, 2, 3).float() / 255.0
    x = (x - torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1)
    ref.fc = torch.nn.Identity()
    with torch.inference_mode():
        want = ref(x).numpy()
    np.testing.assert_allclose(r.data[[0, 7, 11]], want, atol=1e-4, rtol=1e-4)
    # batch size is not semantic: same rows
    st2 = VisualClip(st.config, Runtime(device="cpu", batch_size=1, weights={"r2plus1d-18-tsav": str(path)}))
    np.testing.assert_allclose(dense(st2.compute(None, {"faces": faces})).data, r.data, atol=1e-5)


def test_map_output_is_rjas_25088_for_8_frames(tsav_ckpt) -> None:
    path, _ = tsav_ckpt
    st = VisualClip(VisualClipConfig(backbone="r2plus1d-18-tsav", output="map"),
                    Runtime(device="cpu", weights={"r2plus1d-18-tsav": str(path)}))
    assert st.dim() == 25088
    r = dense(st.compute(None, {"faces": _faces(n=9)}))
    assert r.data.shape == (9, 25088) and np.isfinite(r.data).all()


def test_a_foreign_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    p = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, p)
    st = VisualClip(VisualClipConfig(backbone="r2plus1d-18-tsav"),
                    Runtime(device="cpu", weights={"r2plus1d-18-tsav": str(p)}))
    with pytest.raises(WeightsMissingError, match="not a r2plus1d-18-tsav checkpoint"):
        st.load()
    bad = tmp_path / "pickle.pth"
    torch.save(_Trap(), bad)  # a pickled object whose class would act when unpickled: never run
    _Trap.ran = False
    st = VisualClip(VisualClipConfig(backbone="r2plus1d-18-tsav"),
                    Runtime(device="cpu", weights={"r2plus1d-18-tsav": str(bad)}))
    with pytest.raises(WeightsMissingError, match="no weights found"):
        st.load()
    assert not _Trap.ran


class _Trap(torch.nn.Module):
    ran = False

    def __setstate__(self, state: dict) -> None:
        type(self).ran = True
        super().__setstate__(state)


def test_a_pickled_module_gives_its_weights_without_being_run(tsav_ckpt, tmp_path: Path) -> None:
    _, ref = tsav_ckpt
    p = tmp_path / "whole.pth"
    torch.save(ref, p)
    bb = create_clip_backbone("r2plus1d-18-tsav")
    bb.load("cpu", {"r2plus1d-18-tsav": str(p)})
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(bb._model.state_dict()[k], v), k


def test_kinetics_weights_missing_offline_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with downloads_disabled(), pytest.raises(WeightsMissingError, match="r2plus1d_18-91a641e6.pth"):
        VisualClip(VisualClipConfig()).weights_id()
    with pytest.raises(WeightsMissingError, match="--weights r2plus1d-18-tsav=PATH"):
        VisualClip(VisualClipConfig(backbone="r2plus1d-18-tsav")).weights_id()


def test_i3d_keys_are_pytorch_i3ds_and_a_checkpoint_loads(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = build_i3d(num_classes=400)
    keys = set(net.state_dict())
    for k in ("Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_var", "Mixed_3b.b1b.conv3d.weight",
              "Mixed_5c.b3b.bn.bias", "logits.conv3d.bias"):
        assert k in keys, k
    assert net.Conv3d_1a_7x7.conv3d.weight.shape == (64, 3, 7, 7, 7)
    p = tmp_path / "i3d.pt"
    torch.save(net.state_dict(), p)
    bb = create_clip_backbone("i3d-user")
    bb.load("cpu", {"i3d-user": str(p)})
    clips = np.random.default_rng(0).integers(0, 256, (1, 8, 112, 112, 3), dtype=np.uint8)
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255.0
    x = torch.nn.functional.interpolate(x.reshape(1, 24, 112, 112), size=(224, 224), mode="bilinear",
                                        align_corners=False).reshape(1, 3, 8, 224, 224) * 2 - 1
    with torch.inference_mode():
        m = net.eval().features(x)
    assert tuple(m.shape[1:]) == (1024,) + (bb.map_shape(8)[0], 7, 7)
    np.testing.assert_allclose(bb.embed(clips), m.mean(dim=(2, 3, 4)).numpy(), atol=1e-4, rtol=1e-4)


def test_every_clip_backbone_names_its_weights_and_licence() -> None:
    from avpipe.extractors.weights import get_spec

    for name, cls in CLIP_BACKBONES.items():
        assert get_spec(cls.weights_name).name == cls.weights_name and cls.licence, name


def test_a_legacy_format_state_dict_loads(tmp_path: Path) -> None:
    """pytorch-i3d's rgb_imagenet.pt (2018) predates torch's zip format: a plain state_dict in the
    legacy format must load (weights-only), as a modern one does."""
    torch.manual_seed(4)
    net = build_i3d()
    p = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), p, _use_new_zipfile_serialization=False)
    bb = create_clip_backbone("i3d-user")
    bb.load("cpu", {"i3d-user": str(p)})
    assert torch.equal(bb._model.state_dict()["Mixed_5c.b0.conv3d.weight"], net.state_dict()["Mixed_5c.b0.conv3d.weight"])
    bad = tmp_path / "text.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(WeightsMissingError):
        create_clip_backbone("i3d-user").load("cpu", {"i3d-user": str(bad)})
