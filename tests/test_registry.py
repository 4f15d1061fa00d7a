"""The one registry helper (avpipe/registry.py): duplicate policy, "did you mean", lazy built-ins
that list without importing, entry points, metadata; and its use by the four registries."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avpipe.registry import DuplicateNameError, Registry, UnknownNameError, closest_name

ROOT = Path(__file__).resolve().parents[1]


class _A:
    name = "a"


class _B:
    name = "a"


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    """Write a module ``name`` on a temporary sys.path entry (removed with the test)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_same_object_again_is_a_no_op_and_another_raises():
    reg: Registry[type] = Registry("thing")
    assert reg.register("a", _A, colour="red") is _A
    reg.register("a", _A)  # a module imported twice
    assert reg.get("a") is _A and reg.metadata("a") == {"colour": "red"}
    with pytest.raises(DuplicateNameError, match="thing 'a' registered twice"):
        reg.register("a", _B)
    assert reg.get("a") is _A  # the first registration is kept


def test_equal_value_objects_count_as_the_same():
    reg: Registry[tuple] = Registry("pair")
    reg.register("p", (1, 2))
    reg.register("p", (1, 2))
    with pytest.raises(DuplicateNameError):
        reg.register("p", (1, 3))


def test_unknown_name_is_a_key_error_that_suggests_the_near_one():
    reg: Registry[type] = Registry("fusion model", {"jca": "m:J", "rja": "m:R", "maven-paper": "m:M"})
    with pytest.raises(KeyError) as e:
        reg.get("jac")
    assert isinstance(e.value, UnknownNameError) and e.value.suggestion == "jca"
    assert str(e.value) == ("unknown fusion model 'jac' (did you mean 'jca'?); "
                            "known fusion models: jca, maven-paper, rja")
    assert closest_name("MAVEN_paper", reg.names()) == "maven-paper"
    assert closest_name("zzzzzz", reg.names()) is None
    assert "did you mean" not in str(UnknownNameError("x", "zzzzzz", ["jca"]))


FUSION = ["jca", "rja", "dca", "rjcma", "maven", "maven-frames", "maven-paper"]


@pytest.mark.parametrize("name, similar, typo", [
    ("jac", "jca", "jca"),                    # a swap of neighbours is one edit, both ways
    ("MAVEN_paper", "maven-paper", "maven-paper"),  # case and _/- are not mistakes at all
    ("ca", "jca", "dca"),                     # typo: fewest edits, then the first name
    ("aven-appe", "maven-paper", None),       # alike, but three slips: not a typo
    ("cjk", None, "jca"),                     # two slips from jca, too unlike for difflib
    ("zzzzzz", None, None),
])
def test_one_closest_name_two_notions_of_close(name, similar, typo):
    """The command line's "did you mean" (typo=True: at most 2 edits, fewer than the name's
    length) and the registries' (difflib-similar, fewest edits) are one function."""
    assert closest_name(name, FUSION) == similar
    assert closest_name(name, FUSION, typo=True) == typo


def test_the_command_line_has_no_did_you_mean_of_its_own():
    import avpipe.cli.params as params
    import avpipe.cli.train as train

    assert not hasattr(params, "did_you_mean") and not hasattr(params, "_edit_distance")
    assert train.closest_name is closest_name


def test_lazy_entries_list_without_importing_and_load_on_get(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, "reg_lazy_mod", """
        class Thing:
            name = "thing"
    """)
    reg: Registry[type] = Registry("widget", {"thing": f"{mod}:Thing"})
    assert reg.names() == ["thing"] and "thing" in reg and mod not in sys.modules
    cls = reg.get("thing")
    assert cls.__name__ == "Thing" and sys.modules[mod].Thing is cls
    assert [(e.name, e.obj) for e in reg.list()] == [("thing", cls)]


def test_a_module_that_registers_itself_fulfils_its_lazy_entry(tmp_path, monkeypatch):
    reg: Registry[type] = Registry("widget", {"w": "reg_self_mod:W"})
    monkeypatch.setattr(sys.modules[__name__], "REG", reg, raising=False)
    _module(tmp_path, monkeypatch, "reg_self_mod", f"""
        from {__name__} import REG

        class W:
            name = "w"

        REG.register("w", W, dim=3)
    """)
    assert reg.get("w").__module__ == "reg_self_mod" and reg.metadata("w") == {"dim": 3}


def test_concurrent_first_lookups_get_the_one_object(tmp_path, monkeypatch):
    """Threads (a threaded cluster worker) looking a lazy name up at once import it once and all
    get the same object; registering inside the import never deadlocks."""
    from concurrent.futures import ThreadPoolExecutor

    reg: Registry[type] = Registry("widget", {"c": "reg_conc_mod:C"})
    monkeypatch.setattr(sys.modules[__name__], "REG", reg, raising=False)
    _module(tmp_path, monkeypatch, "reg_conc_mod", f"""
        import time
        from {__name__} import REG

        time.sleep(0.05)

        class C:
            name = "c"

        REG.register("c", C)
    """)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: reg.get("c"), range(16), timeout=30))
    assert len({id(c) for c in got}) == 1 and got[0] is sys.modules["reg_conc_mod"].C


def test_bad_lazy_targets_say_which_entry(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'module:attr'"):
        Registry("widget", {"w": "no_colon"})
    reg: Registry[type] = Registry("widget", {"w": "reg_missing_module_xyz:W"})
    with pytest.raises(ImportError, match="widget 'w': module reg_missing_module_xyz cannot be imported"):
        reg.get("w")
    _module(tmp_path, monkeypatch, "reg_noattr_mod", "X = 1\n")
    reg.register("v", "reg_noattr_mod:V")
    with pytest.raises(ImportError, match="reg_noattr_mod has no 'V'"):
        reg.get("v")
    with pytest.raises(DuplicateNameError):
        reg.register("v", "elsewhere:V")


def test_check_refuses_objects_of_the_wrong_kind():
    def check(name, obj):
        if not isinstance(obj, type):
            raise TypeError(f"{name} is not a class")

    reg: Registry[type] = Registry("widget", check=check)
    with pytest.raises(TypeError, match="w is not a class"):
        reg.register("w", 42)
    assert "w" not in reg


def test_entry_points_load_but_the_own_distribution_is_skipped(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "reg_ep_mod", "class P:\n    name = 'p'\nclass Q:\n    name = 'q'\n")
    for dist, line in (("plugpkg", "p = reg_ep_mod:P"), ("ownpkg", "q = reg_ep_mod:Q")):
        info = tmp_path / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[reg.test.group]\n{line}\n")
    reg: Registry[type] = Registry("widget")
    assert reg.load_entry_points("reg.test.group", skip_dist="ownpkg") == ["p"]
    assert reg.names() == ["p"] and reg.get("p").__name__ == "P"


# -- the four registries --------------------------------------------------------------------------
def test_weights_are_no_longer_silently_replaced():
    from avpipe.extractors import weights as W

    spec = W.WeightSpec(name="test-dup-weights", filename="a.bin", source="user")
    try:
        W.register_weights(spec)
        W.register_weights(W.WeightSpec(name="test-dup-weights", filename="a.bin", source="user"))  # equal: no-op
        with pytest.raises(DuplicateNameError):
            W.register_weights(W.WeightSpec(name="test-dup-weights", filename="b.bin", source="user"))
        assert W.get_spec("test-dup-weights").filename == "a.bin"
        with pytest.raises(KeyError, match="did you mean 'test-dup-weights'"):
            W.get_spec("test-dup-weight")
    finally:
        W.WEIGHTS.unregister("test-dup-weights")


def test_listing_names_imports_no_model_module_and_no_torch():
    """``--fusion`` and ``--backbone`` are checked against names read from the tables alone."""
    code = ("import sys\n"
            "from avpipe.cli.params import fusion_model_names\n"
            "from avpipe.extractors.backbones import backbone_names\n"
            "from avpipe.fusion.models import BUILTIN_MODELS\n"
            "from avpipe.extractors.backbones.base import BUILTIN_BACKBONES\n"
            "assert set(fusion_model_names()) == set(BUILTIN_MODELS), fusion_model_names()\n"
            "assert set(backbone_names()) == set(BUILTIN_BACKBONES), backbone_names()\n"
            "mods = {t.split(':')[0] for t in [*BUILTIN_MODELS.values(), *BUILTIN_BACKBONES.values()]}\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m in mods)\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_builtin_backbone_and_model_is_in_its_table():
    """A class registered by a built-in module but missing from its table would be unknown to
    ``--fusion``/``--backbone`` until something imported it: every table names them all."""
    import importlib
    import inspect
    import pkgutil

    import avpipe.extractors.backbones as bb_pkg
    import avpipe.fusion.models as fm_pkg
    from avpipe.extractors.backbones.base import BACKBONES, Backbone
    from avpipe.fusion.models import MODELS
    from avpipe.fusion.models.base import FusionModel

    for pkg, base, reg in ((bb_pkg, Backbone, BACKBONES), (fm_pkg, FusionModel, MODELS)):
        defined = {}
        for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            for _, obj in inspect.getmembers(importlib.import_module(m.name), inspect.isclass):
                if issubclass(obj, base) and obj.__module__ == m.name and vars(obj).get("name"):
                    defined[obj.name] = obj
        assert defined == reg.load_all(), pkg.__name__
