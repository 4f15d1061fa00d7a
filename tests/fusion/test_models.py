"""Every registered model: forward/backward on small shapes with masks, the shared signature."""
from __future__ import annotations

import pytest
import torch

from avpipe.fusion.models import MissingModalityError, check_modalities, create_model, model_registry

DIMS = {"visual": 16, "audio": 8, "text": 12}
T, B = 12, 3
SMALL = {
    "jca": dict(hidden=8, k=4), "rja": dict(hidden=8), "iaca": dict(hidden=8),
    "rjcma": dict(channels={"visual": [8, 8], "audio": [8], "text": [8]}),
    "maven": dict(d=8, embed=16, ff=16, layers=1), "ca": dict(hidden=8),
    "audio": dict(hidden=8), "visual": dict(hidden=8), "text": dict(hidden=8), "concat": dict(hidden=8),
}


def test_registry_has_all_models():
    assert set(SMALL) <= set(model_registry())


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {k: torch.randn(B, T, d, generator=g) for k, d in DIMS.items()}
    mask = {k: torch.rand(B, T, generator=g) > 0.3 for k in DIMS}
    mask["audio"][0] = False  # a window with no audio at all (absent stream) must not produce NaN
    mask["visual"][1, T // 2:] = False  # padding at the end
    return x, mask


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward(name):
    torch.manual_seed(0)
    m = create_model(name, DIMS, T, **SMALL[name])
    x, mask = _inputs()
    y = m(x, mask)
    assert y.shape == (B, T, 2)
    assert torch.isfinite(y).all()
    y.pow(2).mean().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_invalid_rows_are_ignored(name):
    """Changing features at masked-out rows must not change the output (they are zeroed)."""
    torch.manual_seed(0)
    m = create_model(name, DIMS, T, **SMALL[name]).eval()
    x, mask = _inputs()
    x2 = {k: torch.where(mask[k].unsqueeze(-1), v, v + 100.0) for k, v in x.items()}
    with torch.no_grad():
        assert torch.allclose(m(x, mask), m(x2, mask), atol=1e-5)


def test_options_rja_recursion_and_variants():
    shared = create_model("rja", DIMS, T, hidden=8, iterations=3, shared=True)
    sep = create_model("rja", DIMS, T, hidden=8, iterations=3, shared=False)
    assert len(shared.attn.layers) == 1 and len(sep.attn.layers) == 3
    x, mask = _inputs()
    for kw in (dict(self_branch="attention"), dict(stage2=False, gate_input="attended")):
        assert create_model("iaca", DIMS, T, hidden=8, **kw)(x, mask).shape == (B, T, 2)
    assert create_model("maven", DIMS, T, d=8, embed=16, ff=16, layers=1, code_faithful=True)(x, mask).shape == (B, T, 2)
    assert create_model("rjcma", DIMS, T, channels={"visual": [8], "audio": [8], "text": [8]},
                        use_query_proj=False, shared=False)(x, mask).shape == (B, T, 2)


def test_maven_polar_head_has_no_wrap_discontinuity():
    """Outputs near θ = ±π (negative valence, arousal ≈ 0) vary continuously with the head."""
    from avpipe.fusion.models.maven import polar_to_va

    raw = torch.tensor([[[-1.0, 1e-4, 0.0]], [[-1.0, -1e-4, 0.0]]])
    out = polar_to_va(raw)
    assert torch.allclose(out[0], out[1], atol=1e-3)
    assert out[0, 0, 0] < 0


def test_missing_modality_error_names_stage():
    with pytest.raises(MissingModalityError, match=r"model 'rjcma' needs modality 'text' \(stage 'text'\); run: avpipe extract --stages text"):
        check_modalities("rjcma", {"visual": "visual", "audio": "logmel"})
    with pytest.raises(MissingModalityError):
        create_model("jca", {"visual": 4}, T)


def test_fixed_window_models_reject_other_lengths():
    m = create_model("jca", DIMS, T, hidden=8, k=4)
    x, mask = _inputs()
    with pytest.raises(ValueError, match="windows of 12"):
        m({k: v[:, :6] for k, v in x.items()}, {k: v[:, :6] for k, v in mask.items()})
