"""The fusion modules import one another in one direction: inference helpers live in their own
module, so ``train`` and ``predict`` no longer import each other (not even inside functions)."""
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


def test_train_and_predict_do_not_import_each_other():
    assert "avpipe.fusion.predict" not in _imports("train")
    assert "avpipe.fusion.train" not in _imports("predict")  # data preparation has its own module
    assert "avpipe.fusion.prepare" in _imports("predict") and "avpipe.fusion.prepare" in _imports("train")
    assert not {"avpipe.fusion.train", "avpipe.fusion.predict"} & _imports("inference")


def test_dead_helpers_are_gone():
    import avpipe.fusion.data as data
    import avpipe.fusion.labels as labels
    import avpipe.fusion.metrics as metrics

    assert not hasattr(data, "total_windows") and not hasattr(data, "stats_from_provider")
    assert not hasattr(labels, "split_counts") and not hasattr(metrics, "_torch")
