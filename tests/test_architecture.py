"""The import rules of the package layout, checked on the source (no module is imported).

Why: the library (``pipeline/``, ``extractors/``, ``fusion/``, ...) must be usable from Python
without the command line, and the command line must be the only place that knows about exit
codes and click. The rule is cheap to break by one function-level import, so it is enforced here
by reading every module's syntax tree, function bodies included.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "avpipe"

#: Modules outside ``avpipe/cli/`` allowed to import it: ``python -m avpipe`` is the command.
CLI_IMPORTERS = {"avpipe/__main__.py"}
#: Top-level packages only the command line may import.
CLI_ONLY = ("avpipe.cli", "click")


def _from_target(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from X import ...`` reads, relative imports resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere (top level, functions, ``if`` blocks), with
    relative imports resolved against ``module``. ``from a import b`` yields ``a`` and ``a.b``
    (``b`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(root: Path = ROOT) -> list[str]:
    """``file: imported`` for every library module that imports the command line or click."""
    bad = []
    for f in sorted((root / "avpipe").rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel.startswith("avpipe/cli/") or rel in CLI_IMPORTERS:
            continue
        mod = ".".join(f.relative_to(root).with_suffix("").parts)
        names = imported_modules(f.read_text(encoding="utf-8"), mod, is_package=f.name == "__init__.py")
        bad += [f"{rel}: {n}" for n in sorted(names) if _matches(n, CLI_ONLY)]
    return bad


def test_library_never_imports_the_command_line_or_click():
    assert violations() == []


def test_the_command_line_is_one_package():
    """Every module that imports click lives in ``avpipe/cli/`` (no ``*_cli.py`` elsewhere)."""
    assert (PKG / "cli" / "__init__.py").is_file()
    assert not (PKG / "cli.py").exists()
    strays = [p.relative_to(ROOT).as_posix() for p in PKG.rglob("*.py")
              if "cli" not in p.parent.parts and (p.stem == "cli" or p.stem.endswith("_cli") or p.stem.startswith("cli_"))]
    assert strays == []


@pytest.mark.parametrize("source, found", [
    ("import click", "click"),
    ("def f():\n    from avpipe.cli.errors import UsageFailure\n", "avpipe.cli.errors"),
    ("if True:\n    import avpipe.cli\n", "avpipe.cli"),
    ("from .. import cli\n", "avpipe.cli"),
    ("from ..cli import params\n", "avpipe.cli.params"),
    ("class A:\n    def m(self):\n        from click import echo\n", "click"),
])
def test_the_rule_sees_every_kind_of_import(source, found):
    names = imported_modules(source, "avpipe.fusion.somemodule")
    assert any(_matches(n, (found,)) for n in names), names
    assert any(_matches(n, CLI_ONLY) for n in names)


def test_the_rule_reports_a_library_module_that_imports_the_cli(tmp_path):
    (tmp_path / "avpipe" / "fusion").mkdir(parents=True)
    (tmp_path / "avpipe" / "cli").mkdir()
    (tmp_path / "avpipe" / "fusion" / "ok.py").write_text("import json\n")
    (tmp_path / "avpipe" / "fusion" / "bad.py").write_text("def f():\n    from ..cli.errors import fail\n")
    (tmp_path / "avpipe" / "cli" / "cmd.py").write_text("import click\n")
    assert violations(tmp_path) == ["avpipe/fusion/bad.py: avpipe.cli.errors",
                                    "avpipe/fusion/bad.py: avpipe.cli.errors.fail"]


# -- the layers of the data flow (docs/architecture.md#import-rules) -----------------------------
#: package (a folder or a module under avpipe/) -> the avpipe packages it must never import.
FORBIDDEN = {
    "avpipe/pipeline": ("avpipe.extractors", "avpipe.fusion", "avpipe.data", "avpipe.export",
                        "avpipe.render", "avpipe.scale", "avpipe.sample", "avpipe.demo"),
    "avpipe/extractors": ("avpipe.fusion", "avpipe.data", "avpipe.export", "avpipe.render",
                          "avpipe.scale", "avpipe.demo"),
    "avpipe/fusion": ("avpipe.extractors", "avpipe.export", "avpipe.render", "avpipe.scale", "avpipe.demo"),
    "avpipe/data.py": ("avpipe.extractors", "avpipe.export", "avpipe.render"),
    "avpipe/export.py": ("avpipe.extractors", "avpipe.render"),
    "avpipe/scale": ("avpipe.extractors", "avpipe.fusion", "avpipe.data", "avpipe.export", "avpipe.render"),
}
#: Leaves: import nothing of avpipe's (listing names must not import torch through a stage).
LEAVES = ("avpipe/registry.py", "avpipe/display.py")


def layer_violations(root: Path = ROOT) -> list[str]:
    """``file: imported`` for every import that runs against the data flow."""
    bad = []
    for f in sorted((root / "avpipe").rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        mod = ".".join(f.relative_to(root).with_suffix("").parts)
        names = imported_modules(f.read_text(encoding="utf-8"), mod, is_package=f.name == "__init__.py")
        for owner, forbidden in FORBIDDEN.items():
            if rel == owner or rel.startswith(owner + "/"):
                bad += [f"{rel}: {n}" for n in sorted(names) if _matches(n, forbidden)]
        if rel in LEAVES:
            bad += [f"{rel}: {n}" for n in sorted(names) if _matches(n, ("avpipe",))]
    return bad


def test_imports_follow_the_data_flow():
    """docs/architecture.md#import-rules, kept true."""
    assert layer_violations() == []


def test_the_layer_rule_reports_storage_that_imports_a_stage(tmp_path):
    (tmp_path / "avpipe" / "pipeline").mkdir(parents=True)
    (tmp_path / "avpipe" / "pipeline" / "ok.py").write_text("from .types import Runtime\n")
    (tmp_path / "avpipe" / "pipeline" / "bad.py").write_text("def f():\n    from avpipe.extractors import faces\n")
    assert layer_violations(tmp_path) == ["avpipe/pipeline/bad.py: avpipe.extractors",
                                          "avpipe/pipeline/bad.py: avpipe.extractors.faces"]


# -- private names ------------------------------------------------------------------------------
def private_uses(source: str, module: str, is_package: bool = False) -> list[str]:
    """``module:name`` of every underscore name ``source`` takes from another avpipe module:
    ``from avpipe.x import _name`` (relative imports included) and ``x._name`` on a module or
    object imported from avpipe. A name with a leading underscore is its module's own business;
    what another module needs gets a public name (or moves to where both use it)."""
    package = module if is_package else module.rpartition(".")[0]
    imported: dict[str, str] = {}  # local name -> the avpipe module it came from
    out: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "avpipe":
                    imported[a.asname or a.name.split(".")[0]] = a.name
                    out += [f"{a.name}:{p}" for p in a.name.split(".") if _private(p)]
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            if target.split(".")[0] != "avpipe" or target == module:
                continue
            for a in node.names:
                imported[a.asname or a.name] = target
                if _private(a.name):
                    out.append(f"{target}:{a.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in imported):
            out.append(f"{imported[node.value.id]}:{node.value.id}.{node.attr}")
    return sorted(set(out))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_violations(root: Path = ROOT) -> list[str]:
    bad = []
    for f in sorted((root / "avpipe").rglob("*.py")):
        mod = ".".join(f.relative_to(root).with_suffix("").parts)
        rel = f.relative_to(root).as_posix()
        bad += [f"{rel}: {u}" for u in private_uses(f.read_text(encoding="utf-8"), mod,
                                                     is_package=f.name == "__init__.py")]
    return bad


def test_no_module_uses_another_modules_private_names():
    assert private_violations() == []


@pytest.mark.parametrize("source", [
    "from avpipe.fusion.data import _fit_rows\n",
    "def f():\n    from .data import _fit_rows\n",
    "import avpipe.fusion.data as d\nd._fit_rows(1)\n",
    "from avpipe.fusion import data\ndata._fit_rows(1)\n",
    "from avpipe.pipeline.entry import Entry\nEntry._open(None)\n",
])
def test_the_private_rule_sees_every_kind_of_use(source):
    assert private_uses(source, "avpipe.fusion.train") != []


def test_the_private_rule_allows_public_names_dunders_and_own_names():
    src = ("from avpipe.fusion.data import fit_rows\nimport avpipe.fusion.data as d\nd.__name__\n"
           "from avpipe.fusion.train import _own\nimport numpy as np\nnp._NoValue\n")
    assert private_uses(src, "avpipe.fusion.train") == []
