"""The trainer on a CUDA device (skipped without one; benchmarks/gpu_check.sh runs these on a GPU).

What would break on a GPU and not on the CPU: the bank, windows or batch indices left on the
wrong device, autocast/GradScaler paths that only exist on CUDA, checkpoints that do not load
back on the CPU, and arithmetic that drifts from the CPU's.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from .conftest import small_config

pytestmark = pytest.mark.cuda

LOSS_RTOL = 2e-3  # cuDNN's TF32 convolutions (Ampere and later) round more coarsely than the CPU
DEVICE = "cuda"


def without_dropout(model):
    """Training mode, every dropout probability 0: the devices draw different dropout masks, and
    ``eval()`` is not an option (cuDNN's LSTM has no backward in eval mode)."""
    from torch import nn

    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
        elif isinstance(m, (nn.MultiheadAttention, nn.RNNBase)):
            m.dropout = 0.0
    return model


def _first_losses(corpus, tmp_path, fusion: str, device: str, steps: int = 3) -> list[float]:
    """fp32 losses of the first optimiser steps, dropout off."""
    import torch

    from avpipe.fusion.metrics import compute_loss
    from avpipe.fusion.source import CacheSource
    from avpipe.fusion.train import build_fit, load_data
    from avpipe.fusion.windows import make_windows

    cfg = small_config(corpus, fusion, tmp_path / device, device=device, amp="off").resolved()
    dev = torch.device(device)
    data = load_data(cfg, CacheSource(cfg.cache), dev)
    bank = data.train.bank
    assert bank.device == dev and all(t.device.type == dev.type for t in bank.x.values())
    w = make_windows(bank.offsets, cfg.window, cfg.hop, bank.y_valid, require_labels=True)
    fit = build_fit(cfg, bank.dims, dev, 1)
    without_dropout(fit.model)
    out = []
    for k in range(steps):
        b = bank.gather(w.select(torch.arange(8 * k, 8 * (k + 1), device=w.start.device)), cfg.window)
        loss = compute_loss(cfg.loss, fit.model(b.x, b.mask).float(), b.y, b.y_mask, cfg.aux_losses or {})
        fit.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.grad_clip)
        fit.opt.step()
        out.append(float(loss.detach()))
    return out


@pytest.mark.parametrize("fusion", ["jca", "rjcma", "rja"])
def test_first_fp32_losses_match_cpu(corpus, tmp_path, fusion):
    gpu = _first_losses(corpus, tmp_path, fusion, DEVICE)
    cpu = _first_losses(corpus, tmp_path, fusion, "cpu")
    assert all(math.isfinite(x) for x in gpu)
    np.testing.assert_allclose(gpu, cpu, rtol=LOSS_RTOL)


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_train_on_cuda_with_each_precision(corpus, tmp_path, amp):
    import torch

    from avpipe.fusion.run import RunDir
    from avpipe.fusion.train import train

    cfg = small_config(corpus, "jca", tmp_path / "run", device=DEVICE, amp=amp, epochs=3)
    s = train(cfg, log=lambda _: None)
    assert s["epochs_run"] == 3 and math.isfinite(s["best"]["score"])
    assert s["best"]["score"] > 0.2, s["best"]  # it learned (the synthetic labels are learnable)
    ck = RunDir(cfg.out).load_checkpoint("last", map_location="cpu")  # a GPU run's checkpoint loads on CPU
    assert all(v.device.type == "cpu" for v in ck["model"].values() if isinstance(v, torch.Tensor))
    if amp == "fp16":
        assert ck["scaler"], "fp16 on CUDA trains with a GradScaler whose state is checkpointed"


def test_cuda_predictions_equal_cpu(corpus, tmp_path):
    import torch

    from avpipe.fusion.inference import build_model_from_checkpoint, predict_provider
    from avpipe.fusion.run import RunDir
    from avpipe.fusion.source import CacheSource
    from avpipe.fusion.train import load_data, train

    cfg = small_config(corpus, "jca", tmp_path / "run", device=DEVICE, amp="off", epochs=2)
    train(cfg, log=lambda _: None)
    ck = RunDir(cfg.out).load_checkpoint("best", map_location="cpu")
    rcfg = cfg.resolved()
    preds = {}
    for dev in ("cpu", DEVICE):
        data = load_data(rcfg, CacheSource(rcfg.cache), torch.device(dev))
        model = build_model_from_checkpoint(ck, dev)
        preds[dev], _, _ = predict_provider(model, data.val, rcfg.window, int(rcfg.eval_hop), 16)
    assert preds["cpu"].keys() == preds[DEVICE].keys() and preds["cpu"]
    diff = max(float(np.abs(preds["cpu"][k] - preds[DEVICE][k]).max()) for k in preds["cpu"])
    assert diff < 1e-3, diff
