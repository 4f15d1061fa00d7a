"""The fusion modules import one another in one direction: inference helpers and data preparation
live in modules of their own, so ``train`` and ``predict`` do not import each other (not even
inside functions), and no module reaches into another's private names."""
from __future__ import annotations

import ast
from pathlib import Path

FUSION = Path(__file__).resolve().parents[2] / "avpipe" / "fusion"


def _imports(name: str) -> set[str]:
    tree = ast.parse((FUSION / f"{name}.py").read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _private_imports(path: Path) -> list[str]:
    """``module:name`` of every underscore name imported from another avpipe module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{node.module}:{a.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avpipe")
            for a in node.names if a.name.startswith("_")]


def test_train_and_predict_do_not_import_each_other():
    assert "avpipe.fusion.predict" not in _imports("train")
    assert "avpipe.fusion.train" not in _imports("predict")  # data preparation has its own module
    assert "avpipe.fusion.prepare" in _imports("predict") and "avpipe.fusion.prepare" in _imports("train")
    assert not {"avpipe.fusion.train", "avpipe.fusion.predict"} & _imports("inference")


def test_one_prediction_path():
    """predict, the submission writer and render --run all predict through the Predictor; none
    loads banks or runs the model itself, and none imports another module's private names."""
    for name in ("predict", "submission"):
        assert "avpipe.fusion.predictor" in _imports(name), name
        assert not {"avpipe.fusion.train", "avpipe.fusion.data"} & _imports(name), name
    render = FUSION.parent / "render.py"
    src = render.read_text(encoding="utf-8")
    assert "avpipe.fusion.predictor" in src and "predict_provider" not in src and "load_bank" not in src
    assert "._open(" not in src
    for path in (FUSION / "predict.py", FUSION / "submission.py", FUSION / "predictor.py", render):
        assert _private_imports(path) == [], path.name


def test_nothing_imports_data_preparation_from_train():
    """``train`` no longer re-exports what it imports; data preparation comes from ``prepare``."""
    moved = {"prepare", "Prepared", "open_source", "feature_configs"}
    root = FUSION.parents[1]
    for path in [*(root / "avpipe").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "avpipe.fusion.train":
                assert not moved & {a.name for a in node.names}, path


def test_dead_helpers_are_gone():
    import avpipe.fusion.data as data
    import avpipe.fusion.labels as labels
    import avpipe.fusion.metrics as metrics

    assert not hasattr(data, "total_windows") and not hasattr(data, "stats_from_provider")
    assert not hasattr(labels, "split_counts") and not hasattr(metrics, "_torch")
