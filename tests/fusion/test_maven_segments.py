"""``maven`` as the authors' MAVEN: one sequence per transcript segment, one audio and one text token
per segment, per-frame visual tokens and per-frame outputs; ``maven-frames`` keeps the per-frame
front end. Written from the description of the authors' data and model (docs/recipes.md#maven-segments,
docs/models-fusion.md), not from their code: segment k spans [e_{k−1}, e_k) at 30 fps, frames
⌊30·e_{k−1}⌋ … ⌊30·e_{k−1}⌋ + ⌊30·(e_k − e_{k−1})⌋ − 1, capped; no transcript = one segment; each
tensor of a segment standardised by its own scalar mean and std.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.models import create_model, get_model_class
from avpipe.fusion.segments import SegmentPlan, authors_segment_frames, segment_spans

DIMS = {"visual": 12, "audio": 10, "text": 8}
SMALL = {"d": 8, "embed": 12, "layers": 1, "ff": 16, "enc_heads": 2, "heads": 2}


# ----------------------------------------------------------------------------- segment boundaries
def test_segment_frames_follow_the_end_times_at_30_fps():
    # ends 1.0, 2.5, 2.55, 10 s: segment k starts at ⌊30·e_{k−1}⌋ and has ⌊30·(e_k − e_{k−1})⌋ frames
    assert authors_segment_frames([1.0, 2.5, 2.55, 10.0], 200) == [(0, 30), (30, 45), (75, 1), (76, 124)]
    # the start times are not used: a segment begins where the previous one ended
    assert authors_segment_frames([0.5, 3.0], 1000) == [(0, 15), (15, 75)]
    # capped at the video's frame count; a segment starting after the video is dropped
    assert authors_segment_frames([1.0, 20.0, 40.0], 100) == [(0, 30), (30, 70)]
    # a segment shorter than one frame has no frame
    assert authors_segment_frames([1.0, 1.02, 2.0], 100) == [(0, 30), (30, 29)]


def test_no_transcript_is_one_segment():
    assert authors_segment_frames([], 500) == [(0, 500)]
    assert segment_spans([], 500).tolist() == [[0, 500]]
    assert SegmentPlan().spans("unknown.mp4", 77).tolist() == [[0, 77]]


def test_every_frame_is_in_exactly_one_segment():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        ends = np.cumsum(rng.uniform(0.01, 3.0, int(rng.integers(0, 8))))
        spans = segment_spans(ends, n)
        cover = np.zeros(n, int)
        for s, ln in spans:
            assert ln > 0
            cover[s:s + ln] += 1
        assert (cover == 1).all()
        # the authors' segments are kept as they are; the rest fills gaps and the tail
        for seg in authors_segment_frames(ends, n):
            assert list(seg) in spans.tolist()
    # a frame skipped by the floor arithmetic and the tail after the last end are segments of their own
    assert segment_spans([0.05, 0.1], 10).tolist() == [[0, 1], [1, 1], [2, 8]]


def test_segment_windows_never_cross_a_boundary_and_cap_at_window():
    from types import SimpleNamespace

    plan = SegmentPlan({"a": np.array([1.0, 2.0]), "b": np.array([])})
    bank = SimpleNamespace(videos=["a", "b"], offsets=torch.tensor([0, 100, 170]),
                           y_valid=torch.ones(171, dtype=torch.bool))
    w = plan.windows(bank, window=32, hop=32)
    got = list(zip(w.start.tolist(), w.length.tolist(), w.video.tolist()))
    # a: segments [0,30), [30,60), tail [60,100) cut into 32 + the last piece aligned to the end
    assert got[:4] == [(0, 30, 0), (30, 30, 0), (60, 32, 0), (68, 32, 0)]
    # b: no transcript, one segment of 70 frames in pieces of at most 32
    assert got[4:] == [(100, 32, 1), (132, 32, 1), (138, 32, 1)]
    bank.y_valid[:30] = False
    assert plan.windows(bank, 32, 32, require_labels=True).start.tolist()[:2] == [30, 60]  # unlabelled: dropped


# ----------------------------------------------------------------------------- one token per segment
def _batch(T=9, B=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(B, T, d, generator=g, dtype=dtype) for m, d in DIMS.items()}
    mask = {m: torch.ones(B, T, dtype=torch.bool) for m in DIMS}
    return x, mask


def test_audio_and_text_are_one_token_per_segment():
    torch.manual_seed(0)
    seg = create_model("maven", DIMS, 9, **SMALL).double().eval()
    torch.manual_seed(0)
    frames = create_model("maven-frames", DIMS, 9, **SMALL).double().eval()
    assert seg.tokens == "segment" and frames.tokens == "frame"
    x, mask = _batch()
    perm = torch.randperm(9)
    xp = {**x, "audio": x["audio"][:, perm], "text": x["text"][:, perm]}
    # the order of the audio/text rows inside a segment does not matter: they are one vector
    torch.testing.assert_close(seg(x, mask), seg(xp, mask))
    assert not torch.allclose(frames(x, mask), frames(xp, mask))
    # … their mean: replacing every row by the mean changes nothing
    xm = {**x, **{m: x[m].mean(1, keepdim=True).expand_as(x[m]) for m in ("audio", "text")}}
    torch.testing.assert_close(seg(x, mask), seg(xm, mask))
    # frames keep their own outputs (the visual stream is per frame)
    y = seg(x, mask)
    assert y.shape == (2, 9, 2) and not torch.allclose(y[:, 0], y[:, 1])


def test_invalid_rows_do_not_enter_the_segment_token():
    torch.manual_seed(0)
    m = create_model("maven", DIMS, 9, **SMALL).double().eval()
    x, mask = _batch()
    mask["audio"][:, 5:] = False
    x2 = {**x, "audio": x["audio"].clone()}
    x2["audio"][:, 5:] = 100.0
    torch.testing.assert_close(m(x, mask), m(x2, mask))


def test_each_segment_is_standardised_on_its_own():
    cfg = TrainConfig(fusion="maven", model=dict(SMALL)).resolved()
    torch.manual_seed(0)
    m = create_model("maven", DIMS, 9, **cfg.model).double().eval()
    assert m.input_standardise and m.input_noise == 0.01
    x, mask = _batch()
    y = m(x, mask)
    # an affine change of one segment's tensors (sample 0) leaves every prediction as it was …
    x2 = {k: v.clone() for k, v in x.items()}
    x2["visual"][0] = 3 * x2["visual"][0] + 4
    x2["audio"][0] = 0.5 * x2["audio"][0] - 2
    x2["text"][0] = 7 * x2["text"][0]
    torch.testing.assert_close(m(x2, mask), y)
    # … the token is standardised over its D values after pooling: a constant per-dimension offset is not
    # removed (it would be by a per-dimension z-score over the frames)
    x3 = {k: v.clone() for k, v in x.items()}
    x3["audio"][0] += torch.linspace(-1, 1, DIMS["audio"], dtype=torch.float64)
    assert not torch.allclose(m(x3, mask)[0], y[0])
    # noise N(0, 0.01²) only while training
    m.train()
    torch.manual_seed(1)
    a = m.standardise({"audio": torch.ones(1, 1, 10, dtype=torch.float64) * 5
                       + torch.arange(10, dtype=torch.float64)}, {"audio": torch.ones(1, 1, dtype=torch.bool)})
    flat = a["audio"].reshape(-1)
    assert abs(float(flat.mean())) < 1e-12 and abs(float(flat.std()) - 1) < 1e-6


# ----------------------------------------------------------------------------- equations (float64)
def _mha(q, kv, attn, key_valid):
    """Multi-head attention written out: per head softmax(q Wq (kv Wk)ᵀ / √dh) kv Wv, concatenated,
    output projection; keys outside ``key_valid`` get no weight (all invalid: every key counts)."""
    d = q.shape[-1]
    h = attn.num_heads
    dh = d // h
    W, b = attn.in_proj_weight, attn.in_proj_bias
    Q, K, V = q @ W[:d].T + b[:d], kv @ W[d:2 * d].T + b[d:2 * d], kv @ W[2 * d:].T + b[2 * d:]
    valid = key_valid if key_valid.any() else torch.ones_like(key_valid)
    outs = []
    for i in range(h):
        sl = slice(i * dh, (i + 1) * dh)
        s = Q[:, sl] @ K[:, sl].T / math.sqrt(dh)
        s = s.masked_fill(~valid[None, :], -math.inf)
        outs.append(torch.softmax(s, dim=-1) @ V[:, sl])
    return torch.cat(outs, -1) @ attn.out_proj.weight.T + attn.out_proj.bias


def _ln(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _encoder_layer(h, layer, frame_valid):
    """Pre-norm transformer layer: h + SA(LN₁ h); h + W₂ GELU(W₁ LN₂ h)."""
    a = _ln(h, layer.norm1)
    h = h + _mha(a, a, layer.self_attn, frame_valid)
    f = _ln(h, layer.norm2)
    f = torch.nn.functional.gelu(f @ layer.linear1.weight.T + layer.linear1.bias)
    return h + f @ layer.linear2.weight.T + layer.linear2.bias


def _standardise(t, valid):
    v = t[valid]
    return (t - v.mean()) / (v.std(unbiased=True) + 1e-8)


def ref_maven_segment(m, v, a, t, vmask):
    """One segment of T frames: visual (T, Dv) with valid frames ``vmask`` (a frame without a face
    is still a frame of the segment: it carries the audio and text tokens through the encoders);
    the audio and text vectors a, t (D,). Returns (T, 2)."""
    V = _standardise(v, vmask) * vmask[:, None]
    a = (a - a.mean()) / (a.std(unbiased=True) + 1e-8)
    t = (t - t.mean()) / (t.std(unbiased=True) + 1e-8)
    f = {"visual": V @ m.proj["visual"].weight.T + m.proj["visual"].bias,
         "audio": (a @ m.proj["audio"].weight.T + m.proj["audio"].bias)[None],
         "text": (t @ m.proj["text"].weight.T + m.proj["text"].bias)[None]}
    valid = {"visual": vmask, "audio": torch.ones(1, dtype=torch.bool), "text": torch.ones(1, dtype=torch.bool)}
    cross = {k: [] for k in f}
    for q, k in (("visual", "audio"), ("visual", "text"), ("audio", "visual"), ("audio", "text"),
                 ("text", "visual"), ("text", "audio")):
        cross[q].append(_mha(f[q], f[k], m.cross[f"{q}2{k}"], valid[k]))
    enh = {k: _ln((f[k] + cross[k][0] + cross[k][1]) / 3, m.norm) for k in f}
    T = v.shape[0]
    h = torch.cat([enh["visual"], enh["audio"].expand(T, -1), enh["text"].expand(T, -1)], -1)
    h = h @ m.fuse_in.weight.T + m.fuse_in.bias
    outs = []
    for enc in m.encoders:
        e = h
        for layer in enc.layers:
            e = _encoder_layer(e, layer, torch.ones_like(vmask))
        outs.append(e)
    h = torch.cat(outs, -1)
    for lin in (m.mlp[0], m.mlp[3]):
        h = torch.relu(h @ lin.weight.T + lin.bias)
    return h @ m.mlp[6].weight.T + m.mlp[6].bias


def test_segment_path_equals_the_equations_in_float64():
    cfg = TrainConfig(fusion="maven", model={**SMALL, "layers": 2}).resolved()
    torch.manual_seed(3)
    m = create_model("maven", DIMS, 11, **cfg.model).double().eval()
    # two segments of different length in one batch: the second is padded after its 7 frames
    x, mask = _batch(T=11, seed=4)
    for k in mask:
        mask[k][1, 7:] = False
    mask["visual"][0, 2] = False  # a frame without a face inside the first segment
    got = m(x, mask)
    for b, T in ((0, 11), (1, 7)):
        a = x["audio"][b, :T][mask["audio"][b, :T]].mean(0)
        t = x["text"][b, :T][mask["text"][b, :T]].mean(0)
        want = ref_maven_segment(m, x["visual"][b, :T], a, t, mask["visual"][b, :T])
        torch.testing.assert_close(got[b, :T], want, rtol=1e-10, atol=1e-10)


def test_v_to_a_attention_over_one_key_adds_the_projected_audio_value():
    torch.manual_seed(0)
    m = create_model("maven", DIMS, 9, **SMALL).double().eval()
    attn = m.cross["visual2audio"]
    q = torch.randn(1, 9, SMALL["d"], dtype=torch.float64)
    k = torch.randn(1, 1, SMALL["d"], dtype=torch.float64)
    out, _ = attn(q, k, k, need_weights=False)
    d = SMALL["d"]
    value = k[0, 0] @ attn.in_proj_weight[2 * d:].T + attn.in_proj_bias[2 * d:]
    want = (value @ attn.out_proj.weight.T + attn.out_proj.bias).expand(9, -1)
    torch.testing.assert_close(out[0], want)


# ----------------------------------------------------------------------------- names and old runs
def test_maven_frames_is_avpipes_per_frame_model_and_maven_uses_segments():
    # what a sequence is, is recorded with the run (the trainer reads segments for "segment")
    assert TrainConfig(fusion="maven").resolved().model["tokens"] == "segment"
    assert TrainConfig(fusion="maven", recipe="avpipe").resolved().model["tokens"] == "segment"
    assert TrainConfig(fusion="maven-frames").resolved().model["tokens"] == "frame"
    assert TrainConfig(fusion="maven-paper").resolved().model["tokens"] == "frame"  # unchanged: per frame
    assert "tokens" not in TrainConfig(fusion="rja").resolved().model
    assert TrainConfig(fusion="maven-frames").resolved().recipe == "avpipe"  # avpipe's own variant
    # asked for, it trains with MAVEN's recipe on its fixed 300-frame windows (what maven did before)
    r = TrainConfig(fusion="maven-frames", recipe="authors").resolved()
    assert (r.window, r.hop, r.loss, r.selection) == (300, 200, "mse_mean", "val_loss")
    assert "maven-frames" in get_model_class("maven-frames").info.summary or "per-frame" in \
        get_model_class("maven-frames").info.summary


def _old_maven_run(tmp_path):
    out = tmp_path / "old"
    (out / "checkpoints").mkdir(parents=True)
    old = TrainConfig(fusion="maven", labels="x", out=str(out)).resolved().to_dict()
    del old["model"]["tokens"]  # recorded before segment tokens existed
    old.update(window=300, hop=200)
    (out / "config.json").write_text(json.dumps(old))
    return out


def test_an_old_maven_run_says_it_trained_the_per_frame_model(tmp_path):
    out = _old_maven_run(tmp_path)
    saved = TrainConfig.load_run_config(out / "config.json")
    assert saved.fusion == "maven-frames" and saved.model["tokens"] == "frame" and saved.recipe == "authors"
    assert saved.resolved().window == 300


def test_resume_of_an_old_maven_run_as_maven_is_refused_and_as_maven_frames_continues(tmp_path):
    from avpipe.fusion.run import RunConflictError
    from avpipe.fusion.train import claim_run

    out = _old_maven_run(tmp_path)
    with pytest.raises(RunConflictError, match="resume it with --fusion maven-frames"):
        claim_run(TrainConfig(fusion="maven", out=str(out)), resume=True, overwrite=False)
    (out / "checkpoints" / "last.pt").write_bytes(b"")
    got = claim_run(TrainConfig(fusion="maven-frames", out=str(out)), resume=True, overwrite=False)
    assert got.fusion == "maven-frames" and got.recipe == "authors"


def test_an_old_maven_checkpoint_rebuilds_the_per_frame_model():
    from avpipe.fusion.inference import build_model_from_checkpoint

    torch.manual_seed(0)
    old = create_model("maven-frames", DIMS, 9, **SMALL)
    ck = {"fusion": "maven", "dims": DIMS, "window": 9, "model_options": dict(SMALL), "model": old.state_dict()}
    m = build_model_from_checkpoint(ck)
    assert type(m).__name__ == "MAVENFrames" and m.tokens == "frame"
    ck["model_options"] = {**SMALL, "tokens": "segment"}  # a maven run of today records its tokens
    assert build_model_from_checkpoint(ck).tokens == "segment"


# ----------------------------------------------------------------------------- end to end
def _corpus_with_asr(root):
    from avpipe.fusion.synthetic import SyntheticSpec, make_corpus
    from avpipe.pipeline.ingest import write_precomputed
    from avpipe.pipeline.stage import StageResult

    spec = SyntheticSpec(n_videos=6, min_frames=150, max_frames=220, dims=dict(DIMS), seed=1)
    make_corpus(root / "cache", root / "labels", spec)
    results, keys = {}, {}
    for i in range(spec.n_videos):
        cid = f"{i:08x}" + "0" * 32
        keys[cid] = f"vid{i:04d}.mp4"
        st = np.array([[0.3, 2.0], [2.2, 4.0], [4.1, 5.5]]) if i % 3 else np.zeros((0, 2))  # vid0, vid3: none
        results[cid] = StageResult(data=st.copy(), mask=None, extras={"segment_times": st},
                                   attrs={"present": True, "n_segments": len(st)})
    write_precomputed(root / "cache", "asr", None, results, keys, {"synthetic": True})
    return spec


def test_train_maven_end_to_end_on_transcript_segments(tmp_path):
    import csv

    from click.testing import CliRunner

    from avpipe.cli import main

    _corpus_with_asr(tmp_path)
    out = tmp_path / "run"
    opts = [f"--model-option={k}={v}" for k, v in SMALL.items()]
    r = CliRunner().invoke(main, ["train", "--fusion", "maven", "--labels", str(tmp_path / "labels"),
                                  "--cache", str(tmp_path / "cache"), "--out", str(out), "--epochs", "2",
                                  "--device", "cpu", *opts])
    assert r.exit_code == 0, r.output
    rec = TrainConfig.load_run_config(out / "config.json")
    assert rec.fusion == "maven" and rec.model["tokens"] == "segment" and rec.recipe == "authors"
    assert rec.window == 900
    # one training sequence per segment: 60, 60 and 45 frames, then the tail; no transcript: one
    labels = sorted((tmp_path / "labels" / "Train_Set").glob("*.txt"))
    want = 0
    for p in labels:
        n = len(p.read_text().splitlines()) - 1
        want += (3 + (n > 165)) if int(p.stem[3:]) % 3 else 1
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r_["windows"]) for r_ in rows] == [want, want]
    # predictions come out per frame for every validation video
    for p in sorted((tmp_path / "labels" / "Validation_Set").glob("*.txt")):
        pred = out / "predictions" / "val" / f"{p.stem}.csv"
        assert len(pred.read_text().splitlines()) == len(p.read_text().splitlines())  # header + one per frame
    # evaluate re-scores on the same segments (sliding windows would give other numbers)
    r = CliRunner().invoke(main, ["evaluate", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    best = json.loads((out / "eval" / "val_best.json").read_text())["overall"]
    again = json.loads((out / "eval" / "metrics.json").read_text())["overall"]
    assert again == pytest.approx(best, abs=1e-6)


def test_predictions_are_per_frame_from_each_segment_alone():
    from avpipe.fusion.data import FeatureBank, InMemoryBanks
    from avpipe.fusion.inference import predict_provider

    torch.manual_seed(0)
    m = create_model("maven", DIMS, 900, **SMALL).eval()
    n = 50
    g = torch.Generator().manual_seed(2)
    x = {k: torch.cat([torch.randn(n, d, generator=g), torch.zeros(1, d)]) for k, d in DIMS.items()}
    valid = {k: torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)]) for k in DIMS}
    bank = FeatureBank(["v"], ["v.mp4"], x, valid, torch.zeros(n + 1, 2), valid["visual"].clone(),
                       torch.tensor([0, n]))
    plan = SegmentPlan({"v.mp4": np.array([0.5, 1.0])})  # frames [0, 15), [15, 30), then [30, 50)
    got = predict_provider(m, InMemoryBanks(bank), 900, 900, 2, segments=plan)[0]["v"]
    with torch.no_grad():
        want = torch.cat([m({k: t[None, s:s + ln] for k, t in x.items()},
                            {k: t[None, s:s + ln] for k, t in valid.items()})[0] for s, ln in ((0, 15), (15, 15), (30, 20))])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    whole = predict_provider(m, InMemoryBanks(bank), 900, 900, 2)[0]["v"]  # without the plan: one sequence
    assert not np.allclose(whole, got, atol=1e-4)
