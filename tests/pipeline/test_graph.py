"""The stage graph, the one fingerprint walk, entry-point registration and the layering rules."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from avpipe.pipeline import graph, stage
from avpipe.pipeline.fingerprint import walk
from avpipe.pipeline.config import PipelineConfig

REPO = Path(__file__).resolve().parents[2]

#: Default fingerprints as computed before the stage graph, the fingerprint walk and the types
#: moved: cache keys must not change when code is only reorganised.
PINNED = {
    "probe": "c0ff05667333335b6d67f6839154a0e380938e03cb48c33384624cd2fbf1c5e3",
    "audio": "8fa74b44a43020194cdd89c22d6e0e15442b11049eb0421a158bcea74fa648bb",
    "logmel": "b995f790fa2e599da47afaa3ed4116bb8525b536fc72837177d27122ba896464",
    "toy_a": "9455b429d86f08ce7aeb7150b97cf858824009850e899f9940d8a7c825c7bb43",
    "toy_b": "c5bd53124033973e752dbf9c4631466d9e439dd0256550847b7695d45bc1cd0d",  # offset 1.5
}


def test_default_fingerprints_are_unchanged():
    nodes = walk(stage.topological_order(["logmel", "toy_b"]), PipelineConfig({"toy_b": {"offset": 1.5}}))
    assert {n: nodes[n].fingerprint.value for n in PINNED} == PINNED


def test_order_is_deterministic_probe_first_and_cycles_are_named():
    g = {"probe": (), "b": ("a",), "a": (), "c": ("b", "a")}
    assert graph.topological_order(g) == ["probe", "a", "b", "c"]
    assert graph.topological_order(g, ["b"]) == ["probe", "a", "b"]
    assert graph.upstream_names("a", ()) == ("probe",) and graph.upstream_names("probe", ()) == ()
    assert graph.dependents(g, "a") == ["b", "c"]
    assert graph.dependents(g, "probe") == ["a", "b", "c"]
    with pytest.raises(KeyError, match="unknown stage 'zz'"):
        graph.topological_order(g, ["zz"])
    with pytest.raises(ValueError, match="cycle"):
        graph.topological_order({"probe": (), "x": ("y",), "y": ("x",)})


def test_builtin_order():
    assert stage.topological_order(["text", "visual"]) == ["probe", "audio", "faces", "asr", "visual", "text"]


def test_every_builtin_stage_is_in_the_table_and_the_table_loads_it():
    """Every stage class defined in avpipe's own modules has its line in BUILTIN_STAGES (the set is
    derived from the modules, so adding a stage needs no edit here), and each line loads that class."""
    import importlib
    import inspect
    import pkgutil

    import avpipe.extractors

    modules = ["avpipe.pipeline.probe"] + [m.name for m in pkgutil.walk_packages(avpipe.extractors.__path__,
                                                                                "avpipe.extractors.")]
    defined = {}
    for name in modules:
        for _, obj in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(obj, stage.Stage) and obj.__module__ == name and vars(obj).get("name"):
                defined[obj.name] = obj
    reg = stage.stage_registry()
    assert defined == {n: reg[n] for n in stage.BUILTIN_STAGES}
    for name, target in stage.BUILTIN_STAGES.items():
        mod, _, attr = target.partition(":")
        assert reg[name] is getattr(importlib.import_module(mod), attr)


def test_builtin_stages_need_no_install_metadata():
    """avpipe declares no ``avpipe.stages`` entry points of its own: the table is enough (no reinstall)."""
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("entry-points", {})
    assert "avpipe.stages" not in eps


def test_stages_register_through_entry_points(tmp_path, monkeypatch):
    """A package declaring ``[avpipe.stages]`` entry points is found without AVPIPE_PLUGINS."""
    (tmp_path / "fakeplug_mod.py").write_text(textwrap.dedent("""
        from avpipe.pipeline.stage import Stage
        from avpipe.pipeline.types import StageResult

        class ToyEP(Stage):
            name = "toy_ep"
            version = "1"

            def compute(self, video, inputs):
                return StageResult(data=inputs["probe"].timestamps[:, None])
    """))
    dist = tmp_path / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[avpipe.stages]\ntoy_ep = fakeplug_mod:ToyEP\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(stage, "_ENTRY_POINTS_LOADED", False)
    try:
        reg = stage.stage_registry()
        assert reg["toy_ep"].__module__ == "fakeplug_mod"
        assert {"probe", "faces", "logmel"} <= set(reg)  # built-ins still there
        assert stage.topological_order(["toy_ep"]) == ["probe", "toy_ep"]
    finally:
        stage._REGISTRY.pop("toy_ep", None)
        sys.modules.pop("fakeplug_mod", None)


def _loaded_after_import(modules: list[str], forbidden: str) -> subprocess.CompletedProcess:
    """Import ``modules`` in a fresh interpreter; fail (exit 1, printing them) if any loaded module
    matches the Python expression ``forbidden`` (over ``m``)."""
    code = (f"import sys, {', '.join(modules)};"
            f"bad = [m for m in sys.modules if {forbidden}];"
            "print(bad); sys.exit(1 if bad else 0)")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_pipeline_imports_no_extractor_and_no_torch():
    r = _loaded_after_import(["avpipe.pipeline.store", "avpipe.pipeline.index", "avpipe.pipeline.plan",
                              "avpipe.pipeline.runner", "avpipe.pipeline.report", "avpipe.pipeline.maintenance",
                              "avpipe.pipeline.types"],
                             "m.startswith('avpipe.extractors') or m == 'torch'")
    assert r.returncode == 0, r.stdout + r.stderr


def test_storage_does_not_import_stage_logic():
    """index/store/entry/shard/lock read the plain types only (no index → fingerprint → stage cycle)."""
    r = _loaded_after_import(["avpipe.pipeline.index", "avpipe.pipeline.entry", "avpipe.pipeline.shard",
                              "avpipe.pipeline.store", "avpipe.pipeline.lock"],
                             "m in ('avpipe.pipeline.stage', 'avpipe.pipeline.fingerprint')")
    assert r.returncode == 0, r.stdout + r.stderr


def test_old_import_locations_still_work():
    from avpipe.pipeline.fingerprint import Fingerprint
    from avpipe.pipeline.plan import PlanError
    from avpipe.pipeline.stage import Runtime, StageError, StageResult, VideoRef
    from avpipe.pipeline import types

    assert (Fingerprint, PlanError, Runtime, StageError, StageResult, VideoRef) == (
        types.Fingerprint, types.PlanError, types.Runtime, types.StageError, types.StageResult, types.VideoRef)


def test_extract_of_stages_without_models_never_imports_torch(tmp_path, videos):
    """Runtime.resolve_device is asked only by stages that load a model; probe and toy stages
    run (in process) without torch ever being imported."""
    code = ("import sys; from avpipe.pipeline.runner import run_extract;"
            f"s = run_extract({str(tmp_path / 'cache')!r}, {str(videos)!r}, stages=['toy_b'], progress=False);"
            "print(s.render()); sys.exit(2 if 'torch' in sys.modules else s.exit_code)")
    import os

    env = dict(os.environ, AVPIPE_PLUGINS="tests.pipeline.toy_stages",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pipeline_modules_have_no_import_cycle():
    """Module-level imports among ``avpipe/pipeline`` form a DAG (lazy imports inside functions
    aside), with the plain types at the bottom."""
    import ast
    from graphlib import CycleError, TopologicalSorter

    deps: dict[str, set[str]] = {}
    for p in (REPO / "avpipe" / "pipeline").glob("*.py"):
        found = set()
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avpipe.pipeline"):
                found.add(node.module if node.module != "avpipe.pipeline" else f"avpipe.pipeline.{node.names[0].name}")
        deps[f"avpipe.pipeline.{p.stem}"] = found
    try:
        list(TopologicalSorter(deps).static_order())
    except CycleError as e:  # pragma: no cover - the failure message
        pytest.fail(f"import cycle: {e.args[1]}")
    assert deps["avpipe.pipeline.types"] == set()
    for storage in ("index", "store", "entry", "shard", "lock"):
        assert not deps[f"avpipe.pipeline.{storage}"] & {"avpipe.pipeline.stage", "avpipe.pipeline.fingerprint"}
