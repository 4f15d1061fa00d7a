"""The authors' training recipes, pinned from their description (docs/recipes.md), not their code.

Each expected value below is written from the recipe as the authors' release describes it — the lr
of every epoch and step, the window enumeration, batch order, selection, loss formula and initial
parameter bounds — and replayed independently of avpipe's implementation.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avpipe.fusion.config import TrainConfig
from avpipe.fusion.metrics import compute_loss, evaluate
from avpipe.fusion.recipes import RECIPES, selection_score
from avpipe.fusion.train import build_fit, make_schedule, steps_per_epoch
from avpipe.fusion.windows import batches, clip_phase_windows, make_windows

PUBLISHED = ("jca", "rja", "dca", "rjcma", "maven")
DIMS = {"visual": 24, "audio": 16, "text": 12}


def cfg_of(name: str, **kw) -> TrainConfig:
    return TrainConfig(fusion=name, **kw).resolved()


# ----------------------------------------------------------------------------- learning rates
def authors_lr(name: str, epoch: int, step: int, M: int) -> float:
    """The lr of training step ``step`` of ``epoch``, from the authors' description."""
    if name == "jca":  # 1e-3, ×0.8 every 2 epochs once epoch > 5 (JCA train.py)
        return 1e-3 if epoch <= 5 else 1e-3 * 0.8 ** ((epoch - 5) // 2)
    if name in ("rja", "dca"):  # config lr until set_lr first runs (epoch 6), then the hard-coded decay
        return {"rja": 1e-4, "dca": 3e-4}[name] if epoch <= 5 else 1e-3 * 0.8 ** ((epoch - 5) // 2)
    if name == "rjcma":  # per-epoch sawtooth to lr0·(e+1)/25, then lr0
        return step * 1e-5 * (epoch + 1) / (25 * M) if epoch < 5 else 1e-5
    if name == "maven":  # Adam 1e-3; the plateau on val loss does not fire while the loss improves
        return 1e-3
    raise KeyError(name)


@pytest.mark.parametrize("name", PUBLISHED)
def test_lr_of_every_step_of_the_first_8_epochs_is_the_authors(name):
    cfg = cfg_of(name)
    M = 7
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=cfg.lr)
    lrs = make_schedule(cfg, opt, M)
    for e in range(8):
        lrs.start_epoch(e)
        for b in range(M):
            lrs.before_batch(e, b)
            assert lrs.lr == pytest.approx(authors_lr(name, e, b, M), rel=1e-12, abs=1e-18), (e, b)
            lrs.after_batch()
        lrs.end_epoch(e, 0.1 + 0.01 * e, 1.0 - 0.01 * e)  # improving score and loss


def test_rjcma_plateau_cuts_after_six_bad_post_warmup_epochs_and_restarts_below_1e8():
    cfg = cfg_of("rjcma")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=cfg.lr)
    lrs = make_schedule(cfg, opt, 4)
    lr_at = {}
    for e in range(40):
        if lrs.restart_due(e):
            assert lrs.restart(e, torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=cfg.lr))
            lr_at["restart"] = e
            break
        lrs.start_epoch(e)
        lr_at[e] = lrs.lr
        lrs.end_epoch(e, 0.5 if e == 0 else 0.1)  # epoch 0 best, never improved again
    # epochs 5..10 bad (6 > patience 5) → 1e-6 from epoch 11; then every 6 epochs ×0.1
    assert lr_at[10] == pytest.approx(1e-5) and lr_at[11] == pytest.approx(1e-6)
    assert lr_at[17] == pytest.approx(1e-7) and lr_at[23] == pytest.approx(1e-8)
    # 1e-5·0.1³ is not below 1e-8: the restart needs the 4th cut (from epoch 29)
    assert lr_at["restart"] == 29
    assert lrs.lr == pytest.approx(1e-5) and lrs.state["i0"] == 29


def test_maven_plateau_watches_the_validation_loss_not_the_ccc():
    cfg = cfg_of("maven")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=cfg.lr)
    lrs = make_schedule(cfg, opt, 3)
    assert cfg.lr == 1e-3
    for e in range(7):  # CCC keeps improving, the loss does not: the authors' plateau fires
        lrs.start_epoch(e)
        assert lrs.lr == pytest.approx(1e-3), e
        lrs.end_epoch(e, 0.1 * e, 1.0)
    assert lrs.lr == pytest.approx(1e-4)


# ----------------------------------------------------------------------------- windows
def authors_clip_phase_starts(N: int, W: int, K: int) -> list[int]:
    """0-based first frame of every window the JCA/RJA/DCA loaders enumerate: window end
    E = (W − K + 1) + W·g + j (1-based), j = 0…K−1, while E ≤ N; first frame E − W + 1 (1-based)."""
    out, g = [], 0
    while (W - K + 1) + W * g <= N:
        for j in range(K):
            E = (W - K + 1) + W * g + j
            if E <= N:
                out.append(E - W)
        g += 1
    return out


@pytest.mark.parametrize("name,count", [("jca", 2496), ("rja", 1248), ("dca", 1248)])
def test_window_starts_and_count_on_20000_frames_are_the_authors(name, count):
    cfg = cfg_of(name)
    assert cfg.windows == "clip_phases"
    N = 20_000
    w = clip_phase_windows(torch.tensor([0, N]), cfg.window, cfg.clip_len, torch.ones(N, dtype=torch.bool))
    starts = (w.start - w.lead).tolist()
    assert len(w) == count
    assert starts == authors_clip_phase_starts(N, cfg.window, cfg.clip_len)
    # every frame 1 … N − 32 is the last frame of exactly one clip; the last 32 frames of none
    ends = (np.asarray(starts)[:, None] + cfg.clip_len * np.arange(1, cfg.window // cfg.clip_len + 1)).ravel()
    assert sorted(ends.tolist()) == list(range(1, N - 31))


def test_clip_phase_windows_pad_before_the_video_and_drop_windows_with_an_unlabelled_clip():
    cfg = cfg_of("jca")
    N = 300
    w = clip_phase_windows(torch.tensor([0, N]), 256, 32, torch.ones(N, dtype=torch.bool))
    assert w.lead.tolist()[:3] == [31, 30, 29] and int(w.length[0]) == 225
    assert len(clip_phase_windows(torch.tensor([0, 224]), 256, 32, torch.ones(224, dtype=torch.bool))) == 0
    lab = torch.ones(N, dtype=torch.bool)
    lab[100:132] = False  # frames 101 … 132 (1-based) unlabelled: exactly one clip of one window
    kept = clip_phase_windows(torch.tensor([0, N]), 256, 32, lab)
    s = set((kept.start - kept.lead).tolist())
    every = authors_clip_phase_starts(N, 256, 32)
    assert set(every) - s == {st for st in every if any(st + 32 * i == 100 for i in range(8))} == {-28}
    assert cfg.windows == "clip_phases"


def test_rjcma_windows_are_hop_200_with_the_last_aligned_to_the_end():
    cfg = cfg_of("rjcma")
    w = make_windows(torch.tensor([0, 20_000]), cfg.window, cfg.hop)
    assert len(w) == 100 and w.start.tolist() == list(range(0, 19_601, 200)) + [19_700]


# ----------------------------------------------------------------------------- batch order
def orders(cfg: TrainConfig, n: int, epochs: int = 2) -> list[list[int]]:
    return [torch.cat(list(batches(n, cfg.batch_size, seed=cfg.seed, epoch=e * 7919 if cfg.shuffle == "epoch" else 0,
                                   shuffle=cfg.shuffle, drop_last=cfg.drop_last))).tolist() for e in range(epochs)]


def test_shuffle_policy_and_drop_last_are_the_authors():
    n = 250
    for name in ("rja", "dca"):  # shuffle: false — enumeration order every epoch
        a, b = orders(cfg_of(name), n)
        assert a == b == list(range(n))
    a, b = orders(cfg_of("rjcma"), n)  # shuffled once per fold: same permutation every epoch
    assert a == b and a != list(range(n)) and sorted(a) == list(range(n))
    for name in ("jca", "maven"):
        a, b = orders(cfg_of(name), n)
        assert a != b
    a, _ = orders(cfg_of("jca"), n)  # batch 96, drop_last: 2 full batches
    assert len(a) == 192
    assert len(orders(cfg_of("rja"), n)[0]) == n
    assert steps_per_epoch(cfg_of("jca"), n, 1) == 2 and steps_per_epoch(cfg_of("rja"), n, 1) == 4


# ----------------------------------------------------------------------------- selection
def _epoch(pred_v, pred_a, lab):
    preds = {"v": np.stack([pred_v, pred_a], 1)}
    labels = {"v": lab}
    valid = {"v": np.ones(len(lab), bool)}
    return preds, labels, valid, evaluate(preds, labels, valid, (20, 50))


def test_selection_picks_the_epoch_the_authors_would():
    rng = np.random.default_rng(0)
    n = 2000
    t = np.cumsum(rng.normal(size=(n, 2)), 0)
    lab = np.clip(t / np.abs(t).max(), -1, 1)
    # epoch A: noisy but unbiased (better raw CCC); epoch B: smooth and slightly biased (better after the
    # 20/50-frame smoothing the RJA/DCA val.py applies)
    ea = _epoch(lab[:, 0] + rng.normal(0, 0.6, n), lab[:, 1] + rng.normal(0, 0.6, n), lab)
    eb = _epoch(0.8 * lab[:, 0] + 0.15, 0.8 * lab[:, 1] + 0.15, lab)
    raw = [e[3].overall["mean"] for e in (ea, eb)]
    smooth = [selection_score("ccc_smoothed_sum", e[3], *e[:3])[0] for e in (ea, eb)]
    assert int(np.argmax(raw)) != int(np.argmax(smooth))  # the criteria disagree on these epochs
    for name in ("rja", "dca"):
        scores = [selection_score(cfg_of(name).selection, e[3], *e[:3])[0] for e in (ea, eb)]
        sm = [e[3].overall_smoothed["valence"] + e[3].overall_smoothed["arousal"] for e in (ea, eb)]
        assert int(np.argmax(scores)) == int(np.argmax(sm))
    # MAVEN: lowest validation loss (MSE + 0.1·(1 − mean CCC)), not the highest CCC
    ec = _epoch(lab[:, 0] * 0.1, lab[:, 1] * 0.1, lab)  # timid: small error, low CCC
    ed = _epoch(lab[:, 0] + rng.normal(0, 0.5, n), lab[:, 1] + rng.normal(0, 0.5, n), lab)  # noisy, higher CCC

    def maven_loss(e):
        p, y = e[0]["v"], e[1]["v"]
        c = [2 * np.mean((p[:, d] - p[:, d].mean()) * (y[:, d] - y[:, d].mean()))
             / (p[:, d].var(ddof=1) + y[:, d].var(ddof=1) + (p[:, d].mean() - y[:, d].mean()) ** 2 + 1e-8)
             for d in range(2)]
        return np.mean((p - y) ** 2) + 0.1 * (1 - np.mean(c))
    losses = [maven_loss(e) for e in (ec, ed)]
    cccs = [e[3].overall["mean"] for e in (ec, ed)]
    assert int(np.argmin(losses)) != int(np.argmax(cccs))
    got = [selection_score(cfg_of("maven").selection, e[3], *e[:3]) for e in (ec, ed)]
    assert int(np.argmax([g[0] for g in got])) == int(np.argmin(losses))
    assert [g[1] for g in got] == pytest.approx(losses, rel=1e-12)


# ----------------------------------------------------------------------------- losses
def _np_ccc_praveen(x, y, eps_den):
    xm, ym = x.mean(), y.mean()
    rho = ((x - xm) * (y - ym)).sum() / (np.sqrt(((x - xm) ** 2).sum()) * np.sqrt(((y - ym) ** 2).sum()) + 1e-8)
    sx, sy = x.std(ddof=1), y.std(ddof=1)
    return 1 - 2 * rho * sx * sy / (sx ** 2 + sy ** 2 + (xm - ym) ** 2 + (1e-8 if eps_den else 0.0))


def _np_ccc_rjcma(g, p):  # per window: unbiased variances, biased covariance
    cov = ((g - g.mean()) * (p - p.mean())).mean()
    return 1 - 2 * cov / (g.var(ddof=1) + p.var(ddof=1) + (g.mean() - p.mean()) ** 2)


def test_loss_equals_the_authors_formula_on_fixed_inputs():
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(5, 40, 2, generator=g, dtype=torch.float64)
    y = (0.6 * pred + 0.5 * torch.randn(5, 40, 2, generator=g, dtype=torch.float64)).clamp(-1, 1)
    mask = torch.ones(5, 40, dtype=torch.bool)
    P, Y = pred.numpy(), y.numpy()
    flat = lambda a, d: a[..., d].ravel()  # noqa: E731
    exp = {"jca": sum(_np_ccc_praveen(flat(P, d), flat(Y, d), True) for d in range(2)),
           "rja": sum(_np_ccc_praveen(flat(P, d), flat(Y, d), False) for d in range(2)),
           "rjcma": sum(np.mean([_np_ccc_rjcma(Y[w, :, d], P[w, :, d]) for w in range(5)]) for d in range(2)),
           "maven": float(np.mean((P - Y) ** 2))}
    exp["dca"] = exp["rja"]
    for name in PUBLISHED:
        got = float(compute_loss(cfg_of(name).loss, pred, y, mask))
        assert got == pytest.approx(exp[name], abs=1e-9), name


# ----------------------------------------------------------------------------- init
def _dims(name):
    from avpipe.fusion.models import get_model_class

    return {m: DIMS[m] for m in get_model_class(name).modalities}


def _fills(w: torch.Tensor, bound: float) -> bool:
    a = w.detach().abs().max().item()
    return a <= bound + 1e-12 and a > 0.9 * bound


def test_initial_parameter_bounds_are_the_authors():
    # JCA / RJCMA: PyTorch defaults, U(±1/√fan_in), on every Linear (no init code in the releases)
    for name in ("jca", "rjcma"):
        m = build_fit(cfg_of(name), _dims(name), torch.device("cpu"), 1).model
        lins = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
        assert lins
        for lin in lins:
            assert _fills(lin.weight, 1 / math.sqrt(lin.in_features)), (name, lin)
    jca = build_fit(cfg_of("jca"), _dims("jca"), torch.device("cpu"), 1).model
    for p in jca.block.parameters():  # the code's bias-free Linear(L, L) etc.
        assert _fills(p, 1 / math.sqrt(p.shape[0]))
    # RJA / DCA: BLSTM initial states Xavier on one (8, h) tensor: bound √(6 / (8 + h))
    for name in ("rja", "dca"):
        m = build_fit(cfg_of(name, model={"hidden": 64}), _dims(name), torch.device("cpu"), 1).model
        h = m.v_lstm.h0.shape[-1]
        both = torch.cat([m.v_lstm.h0.flatten(), m.v_lstm.c0.flatten()])
        assert _fills(both, math.sqrt(6 / (8 + h)))
        q = m.attn.layers[0].q.weight  # Xavier on the co-attention (the code's init loop)
        assert _fills(q, math.sqrt(6 / sum(q.shape)))


# ----------------------------------------------------------------------------- config & runs
def test_published_names_default_to_the_authors_recipe_and_avpipe_keeps_its_own():
    for name in PUBLISHED:
        assert cfg_of(name).recipe == "authors" and name in RECIPES
        a = cfg_of(name, recipe="avpipe")
        assert (a.windows, a.shuffle, a.loss, a.input_norm, a.init, a.grad_clip) == \
            ("hop", "epoch", "ccc", "zscore", "avpipe", 1.0)
    assert cfg_of("rja", recipe="avpipe").lr == 1e-3 and cfg_of("rja").lr == 1e-4
    assert cfg_of("iaca").recipe == "avpipe"
    with pytest.raises(ValueError, match="no authors' recipe"):
        cfg_of("iaca", recipe="authors")
    with pytest.raises(ValueError, match="smoothing widths"):
        cfg_of("rja", smoothing=[])  # the authors' selection smooths: refused before any training
    m = cfg_of("maven").model
    assert (m["enc_heads"], m["ff"], m["enc_dropout"]) == (12, 3072, 0.0)


def test_mse_mean_is_half_avpipes_two_dimension_sum():
    p, y = torch.randn(2, 10, 2, dtype=torch.float64), torch.randn(2, 10, 2, dtype=torch.float64)
    m = torch.ones(2, 10, dtype=torch.bool)
    assert float(compute_loss("mse", p, y, m)) == pytest.approx(2 * float(compute_loss("mse_mean", p, y, m)))


def test_a_run_recorded_before_recipes_is_the_avpipe_recipe_and_resume_keeps_it(tmp_path):
    from avpipe.fusion.run import RunConflictError
    from avpipe.fusion.train import claim_run

    out = tmp_path / "old"
    (out / "checkpoints").mkdir(parents=True)
    old = TrainConfig(fusion="rja", labels="x", out=str(out)).to_dict()
    del old["recipe"]
    (out / "config.json").write_text(json.dumps(old))
    saved = TrainConfig.load_run_config(out / "config.json")
    assert saved.recipe == "avpipe" and saved.resolved().lr == 1e-3
    with pytest.raises(RunConflictError, match="before recipes existed"):
        claim_run(TrainConfig(fusion="rja", recipe="authors", out=str(out)), resume=True, overwrite=False)
    (out / "checkpoints" / "last.pt").write_bytes(b"")
    assert claim_run(TrainConfig(fusion="rja", out=str(out)), resume=True, overwrite=False).recipe == "avpipe"


def test_maven_standardises_each_window_and_modality():
    from avpipe.fusion.models import create_model

    cfg = cfg_of("maven", model={"d": 16, "embed": 24, "layers": 1, "ff": 32, "enc_heads": 2})
    m = create_model("maven", DIMS, 8, **cfg.model).double().eval()
    x = {k: 5 + 3 * torch.randn(2, 8, d, dtype=torch.float64) for k, d in DIMS.items()}
    mask = {k: torch.ones(2, 8, dtype=torch.bool) for k in DIMS}
    z = m.standardise(x, mask)
    for k in DIMS:
        flat = z[k].reshape(2, -1)
        assert torch.allclose(flat.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(flat.std(1), torch.ones(2, dtype=torch.float64), atol=1e-6)
    # a shift and scale of one window's features does not change its prediction
    y1 = m(x, mask)
    y2 = m({k: 2 * v - 7 for k, v in x.items()}, mask)
    assert torch.allclose(y1, y2, atol=1e-6)


def test_the_authors_recipe_trains_end_to_end(corpus, tmp_path):
    from avpipe.fusion.train import train

    small_tcn = {m: [16, 16] for m in ("visual", "audio", "text")}
    for name, kw in (("rjcma", dict(window=64, hop=32, batch_size=8, model={"channels": small_tcn})),
                     ("maven", dict(window=32, hop=16, batch_size=8,
                                    model={"d": 16, "embed": 24, "layers": 1, "ff": 32, "enc_heads": 2})),
                     ("jca", dict(window=64, batch_size=16, model={"hidden": 32})),
                     ("rja", dict(window=64, batch_size=16, model={"hidden": 32}))):
        cfg = TrainConfig(fusion=name, labels=str(corpus["labels"]), cache=str(corpus["cache"]),
                          out=str(tmp_path / name), epochs=3, device="cpu", num_threads=1, seed=0, **kw)
        s = train(cfg, log=lambda m: None)
        rec = TrainConfig.load_run_config(tmp_path / name / "config.json")
        assert rec.recipe == "authors" and rec.windows == ("hop" if name in ("rjcma", "maven") else "clip_phases")
        assert s["epochs_run"] == 3 and math.isfinite(s["best"]["val_ccc_mean"])
        if name == "maven":  # selected on the lowest validation loss
            assert math.isfinite(s["best"]["val_loss"]) and s["best"]["val_selection"] == -s["best"]["val_loss"]
    assert "val_selection" in s["best"]  # rja selects on the smoothed V + A CCC


def test_cli_recipe_flag_and_list(tmp_path):
    from click.testing import CliRunner

    from avpipe.cli import main

    labels = tmp_path / "labels.csv"
    labels.write_text("video,frame,valence,arousal\nv,0,0.1,0.2\n")
    r = CliRunner().invoke(main, ["train", "--fusion", "iaca", "--recipe", "authors", "--labels", str(labels),
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "no authors' recipe" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "--list"])
    assert r.exit_code == 0 and "docs/recipes.md" in r.output and "recipe authors" in r.output
    r = CliRunner().invoke(main, ["train", "--help"])
    assert r.exit_code == 0 and "--recipe" in r.output and "docs/recipes.md" in r.output
