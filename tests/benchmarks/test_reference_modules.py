"""benchmarks/reference_modules.py stays the same function as avpipe's published models.

The throughput benchmark (``bench_published_reference.py``) times avpipe's jca, rja, dca and rjcma
against batched modules of the authors' layer structure; a ratio means something only while each
reference computes what the avpipe model computes. Here, on tiny shapes (fast, CPU, float64, eval
mode, weights mapped), every reference equals its model to 1e-10, a changed weight is noticed, and
the losses the benchmark writes out for the authors' side equal the recipes' losses.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "jca": dict(dims={"audio": 5, "visual": 7}, window=16, clip_len=4, options={"hidden": 6, "k": 3}),
    "rja": dict(dims={"visual": 7, "audio": 5}, window=16, clip_len=4, options={"hidden": 8}),
    "dca": dict(dims={"visual": 7, "audio": 5}, window=16, clip_len=4, options={"hidden": 8}),
    "rjcma": dict(dims={"visual": 7, "audio": 5, "text": 6}, window=20,
                  options={"channels": {"visual": [8, 6], "audio": [4, 4], "text": [6, 6]}, "kernel": 3}),
}


def _module(name: str):
    """A module of benchmarks/ (not a package: the scripts import each other by name)."""
    bench = str(ROOT / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(TINY))
def test_reference_equals_the_avpipe_model(name):
    ref = _module("reference_modules")
    assert ref.max_difference(name, batch=3, **TINY[name]) <= 1e-10


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_changed_weight_is_noticed(name):
    """The check is not vacuous: the outputs depend on the mapped weights, and one weight of the
    reference's attention moved by 1e-3 shows up far above the tolerance."""
    ref = _module("reference_modules")
    kw = TINY[name]
    model, r, _ = ref.build_pair(name, kw["dims"], kw["window"], kw.get("clip_len"), kw["options"])
    r = r.double().eval()
    g = torch.Generator().manual_seed(3)
    x = [torch.randn(2, model.tokens, kw["dims"][m], generator=g, dtype=torch.float64) for m in ref.INPUT_ORDER[name]]
    with torch.no_grad():
        y = r(*x)
        assert y.shape == (2, model.tokens, 2) and float(y.abs().max()) > 1e-3
        weight = r.ja if name == "jca" else r.coattn[-1].key[0].weight
        weight[0, 0] += 1e-3
        assert float((r(*x) - y).abs().max()) > 1e-8


def test_published_shapes_are_the_released_ones():
    ref = _module("reference_modules")
    model, r, cfg = ref.build_pair("rja")
    assert (model.window, model.clip_len, model.tokens) == (512, 32, 16)
    assert len(r.coattn) == 1 and r.coattn[0].key[0].in_features == 16 and r.coattn[0].D == 1024
    _, r, _ = ref.build_pair("dca")
    assert len(r.coattn) == 2 and r.gates is not None
    _, r, _ = ref.build_pair("rjcma")
    assert len(r.coattn) == 2 and r.coattn[0].query is None and r.coattn[0].key[0].in_features == 300
    assert [r.tcn[m][-1].conv2.v.shape[0] for m in r.names] == [256, 128, 128]
    _, r, _ = ref.build_pair("jca")
    assert tuple(r.ja.shape) == (8, 8) and r.enc_a.out_features == 128


def test_the_benchmark_losses_are_the_recipes_losses():
    """The authors' side of the step uses the loss written out in the benchmark; on all-valid
    frames it equals the loss avpipe's recipe trains with."""
    bench = _module("bench_published_reference")
    from avpipe.fusion.recipes import RECIPE_LOSSES

    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(4, 9, 2, generator=g, dtype=torch.float64), torch.rand(4, 9, 2, generator=g, dtype=torch.float64)
    ones = torch.ones(4, 9, dtype=torch.bool)
    for loss, eps in (("ccc_jca", True), ("ccc_praveen", False)):
        torch.testing.assert_close(bench.praveen_ccc_loss(p, t, eps), RECIPE_LOSSES[loss](p, t, ones),
                                   rtol=0, atol=1e-9)
    torch.testing.assert_close(bench.rjcma_ccc_loss(p, t), RECIPE_LOSSES["ccc_rjcma"](p, t, ones), rtol=0, atol=1e-9)


@pytest.mark.parametrize("side", ["reference", "avpipe", "avpipe-tokens"])
def test_each_side_of_the_step_trains(side):
    """One step of each side at jca's published window with batch 2 changes the weights."""
    bench = _module("bench_published_reference")
    step, B, T, K = bench.make_step(side, "jca", 2)
    assert (B, T, K) == (2, 256, 32)
    before = [p.detach().clone() for p in step.net.parameters()]
    assert step() > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, step.net.parameters()))
