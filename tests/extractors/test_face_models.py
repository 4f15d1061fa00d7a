"""Per-frame backbones of the papers (IR-50, HSEmotion EfficientNets, Swin-B): checkpoints written
here in the layouts their authors release (whole pickled modules, prefixed state dicts) load into
avpipe's networks and give the same outputs as the original modules; missing weights are one error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avpipe.extractors.backbones import create_backbone
from avpipe.extractors.backbones.face_models import IMAGENET_MEAN, IMAGENET_STD, build_ir50, to_tensor
from avpipe.extractors.weights import WeightsMissingError, downloads_disabled

CROPS = np.random.default_rng(5).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("side,layout", [(7, "pickle"), (5, "prefixed")])
def test_ir50_from_a_pickled_or_prefixed_checkpoint(tmp_path: Path, side: int, layout: str) -> None:
    torch.manual_seed(side)
    ref = build_ir50(side)
    _randomise_bn(ref)
    ref.eval()
    p = tmp_path / "ir50.pth"
    torch.save(ref if layout == "pickle" else {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, p)
    bb = create_backbone("ir50")
    bb.load("cpu", {"ir50": str(p)})
    assert bb._size == 16 * side
    with torch.inference_mode():
        want = ref(to_tensor(CROPS, 16 * side, (0.5,) * 3, (0.5,) * 3, "cpu")).numpy()
    np.testing.assert_allclose(bb.embed(CROPS), want, atol=1e-4, rtol=1e-4)


def test_ir50_without_a_checkpoint_says_how_to_give_one() -> None:
    with pytest.raises(WeightsMissingError, match="--weights ir50=PATH"):
        create_backbone("ir50").weights_id({})


@pytest.fixture(scope="module")
def hse_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """An HSEmotion-style release: a whole timm EfficientNet-B0 pickled, classifier = Sequential(Linear(1280, 10))."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=10)
    m.classifier = torch.nn.Sequential(torch.nn.Linear(1280, 10))
    _randomise_bn(m)
    p = tmp_path_factory.mktemp("hse") / "enet_b0_8_va_mtl.pt"
    torch.save(m.eval(), p)
    return p, m


def test_hsemotion_features_and_va_head_equal_the_released_module(hse_file) -> None:
    p, ref = hse_file
    feats = create_backbone("hsemotion-enet-b0")
    feats.load("cpu", {"hsemotion-enet-b0-8-va-mtl": str(p)})
    va = create_backbone("hsemotion-enet-b0-va")
    va.load("cpu", {"hsemotion-enet-b0-8-va-mtl": str(p)})
    x = to_tensor(CROPS, 224, IMAGENET_MEAN, IMAGENET_STD, "cpu")
    with torch.inference_mode():
        f = ref.forward_head(ref.forward_features(x), pre_logits=True).numpy()
        scores = ref(x).numpy()
    np.testing.assert_allclose(feats.embed(CROPS), f, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(va.embed(CROPS), scores[:, -2:], atol=1e-4, rtol=1e-4)


def test_hub_backbones_offline_fail_with_the_way_to_fetch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with downloads_disabled():
        for name, hint in (("hsemotion-enet-b0", "enet_b0_8_va_mtl.pt"), ("swin-base", "swin_base_patch4_window7_224")):
            with pytest.raises(WeightsMissingError, match=hint):
                create_backbone(name).weights_id({})


@pytest.mark.slow
def test_swin_base_from_a_timm_style_safetensors_folder(tmp_path: Path) -> None:
    """The hub folder's layout (model.safetensors with the 1000-class head): the head is ignored,
    the pooled features equal timm's own model with the same weights."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(2)
    ref = timm.create_model("swin_base_patch4_window7_224", pretrained=False, num_classes=1000).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    bb = create_backbone("swin-base")
    bb.load("cpu", {"swin-base-patch4-window7-224": str(tmp_path)})
    x = to_tensor(CROPS[:2], 224, IMAGENET_MEAN, IMAGENET_STD, "cpu")
    with torch.inference_mode():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(bb.embed(CROPS[:2]), want, atol=1e-4, rtol=1e-4)
