from __future__ import annotations

from avpipe.pipeline.fingerprint import fingerprint_graph, stage_fingerprint
from avpipe.pipeline.stage import Runtime
from tests.pipeline.toy_stages import AConfig, ToyA, ToyB


def _fp(stage, up=None):
    return stage_fingerprint(stage, up or {"probe": "p" * 64}).value


def test_fingerprint_depends_on_semantics_only():
    base = _fp(ToyA(AConfig(2.0)))
    assert base == _fp(ToyA(AConfig(2.0), Runtime(device="cuda", batch_size=7, num_threads=9,
                                                 weights={"x": "/elsewhere"})))
    assert base != _fp(ToyA(AConfig(3.0)))
    assert base != _fp(ToyA(AConfig(2.0)), {"probe": "q" * 64})

    class V2(ToyA):
        version = "2"

    assert base != _fp(V2(AConfig(2.0)))

    class W(ToyA):
        def weights_id(self):
            return "sha-abc"

    assert base != _fp(W(AConfig(2.0)))


def test_upstream_change_propagates_down_the_graph():
    from avpipe.pipeline.probe import Probe

    stages = {"probe": Probe(), "toy_a": ToyA(AConfig(1.0)), "toy_b": ToyB()}
    order = ["probe", "toy_a", "toy_b"]
    a = fingerprint_graph(stages, order)
    stages["toy_a"] = ToyA(AConfig(5.0))
    b = fingerprint_graph(stages, order)
    assert a["probe"].value == b["probe"].value
    assert a["toy_a"].value != b["toy_a"].value
    assert a["toy_b"].value != b["toy_b"].value
    assert b["toy_b"].upstream == {"probe": b["probe"].value, "toy_a": b["toy_a"].value}
