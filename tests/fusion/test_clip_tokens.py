"""Clip tokens (a window of N frames cut into clips of K frames, one token per clip, predictions
expanded back to frames), the per-model window/clip defaults, and bf16 autocast on CPU."""
from __future__ import annotations

import math

import pytest
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.models import create_model
from avpipe.fusion.windows import expand_clips, pool_clips
from tests.fusion.conftest import small_config


def test_pool_clips_means_valid_frames_and_pads_the_tail():
    x = {"v": torch.arange(10, dtype=torch.float64).view(1, 10, 1).repeat(1, 1, 2)}
    mask = {"v": torch.tensor([[True, False, True, True, False, False, False, False, True, True]])}
    xt, mt = pool_clips(x, mask, 4)  # clips [0..3], [4..7], [8, 9 + 2 padded]
    assert xt["v"].shape == (1, 3, 2)
    torch.testing.assert_close(xt["v"][0, :, 0], torch.tensor([(0 + 2 + 3) / 3, 0.0, 8.5], dtype=torch.float64))
    assert mt["v"].tolist() == [[True, False, True]]
    y = torch.tensor([[[1.0], [2.0], [3.0]]])
    assert expand_clips(y, 4, 10)[0, :, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="clip_len"):
        pool_clips(x, mask, 0)


def test_model_with_clips_runs_on_tokens_and_expands_to_frames():
    torch.manual_seed(0)
    dims = {"visual": 6, "audio": 4}
    m = create_model("rja", dims, 24, hidden=8, clip_len=4).eval()
    assert m.tokens == 6 and m.attn.layers[0].k[0].in_features == 6  # L×L weights built for tokens
    g = torch.Generator().manual_seed(1)
    x = {k: torch.randn(2, 24, d, generator=g) for k, d in dims.items()}
    mask = {k: torch.rand(2, 24, generator=g) > 0.3 for k in dims}
    with torch.no_grad():
        y = m(x, mask)
        assert y.shape == (2, 24, 2)
        assert torch.equal(y.view(2, 6, 4, 2), y.view(2, 6, 4, 2)[:, :, :1].expand(-1, -1, 4, -1))
        xt, mt = pool_clips(x, mask, 4)
        torch.testing.assert_close(y[:, ::4], m.fuse(xt, mt))
    with pytest.raises(ValueError, match="window 30 is not a multiple of clip_len 4"):
        create_model("rja", dims, 30, hidden=8, clip_len=4)


def test_published_defaults_resolve_from_the_name():
    got = {n: (c.window, c.hop, c.clip_len, c.batch_size) for n in ("jca", "rja", "dca", "iaca", "rjcma", "maven")
           for c in [TrainConfig(fusion=n).resolved()]}
    assert got["jca"] == (256, 128, 32, 96)
    assert got["rja"] == got["dca"] == got["iaca"] == (512, 256, 32, 64)
    assert got["rjcma"] == (300, 200, 1, 12)
    assert got["maven"][2] == 1
    r = TrainConfig(fusion="rja").resolved()
    assert r.model["clip_len"] == 32  # recorded in the model options, so a checkpoint rebuilds it
    assert TrainConfig(fusion="rja", window=64, clip_len=8).resolved().model["clip_len"] == 8
    assert TrainConfig(fusion="rja", window=64, model={"clip_len": 16}).resolved().clip_len == 16
    with pytest.raises(ValueError, match="window 300 is not a multiple of clip_len 32"):
        TrainConfig(fusion="jca", window=300).resolved()


def test_old_checkpoint_options_without_clip_len_stay_per_frame():
    m = create_model("jca", {"visual": 4, "audio": 4}, 12, hidden=8, k=4)
    assert m.clip_len == 1 and m.tokens == 12


def test_trainer_with_clip_tokens_learns_and_rebuilds(corpus, tmp_path):
    from avpipe.fusion.inference import build_model_from_checkpoint
    from avpipe.fusion.train import train

    s = train(small_config(corpus, "jca", tmp_path / "clip", model={"hidden": 32}, window=64, hop=32, clip_len=8,
                           epochs=4), log=lambda m: None)
    assert math.isfinite(s["best"]["val_ccc_mean"]) and s["best"]["val_ccc_mean"] > 0.2
    ck = torch.load(tmp_path / "clip" / "checkpoints" / "best.pt", weights_only=True)
    m = build_model_from_checkpoint(ck)
    assert (m.clip_len, m.tokens) == (8, 8)


def test_bf16_autocast_on_cpu_is_used_and_close_to_float32(corpus, tmp_path):
    from avpipe.fusion.train import amp_settings, train

    assert amp_settings(TrainConfig(amp="bf16"), torch.device("cpu")) == (True, torch.bfloat16)
    assert amp_settings(TrainConfig(amp="auto"), torch.device("cpu"))[0] is False
    ccc = {}
    for amp in ("off", "bf16"):
        s = train(small_config(corpus, "jca", tmp_path / amp, model={"hidden": 32}, epochs=4, amp=amp),
                  log=lambda m: None)
        ccc[amp] = s["best"]["val_ccc_mean"]
    assert math.isfinite(ccc["bf16"]) and abs(ccc["bf16"] - ccc["off"]) < 0.1, ccc


def test_coattention_cpu_chunks_equal_one_batched_pass():
    from avpipe.fusion.models.blocks import JointCoAttention

    torch.manual_seed(0)
    blk = JointCoAttention([6, 4], 5).double().eval()
    xs = [torch.randn(7, 5, 6, dtype=torch.float64), torch.randn(7, 5, 4, dtype=torch.float64)]
    whole = blk(xs)
    blk.cpu_chunk_bytes = 6 * 10 * 8 * 2  # two samples per chunk
    for a, b in zip(blk(xs), whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
