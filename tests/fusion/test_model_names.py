"""Published models by name: registry metadata, ``avpipe train --list`` and ``train --help``."""
from __future__ import annotations

from click.testing import CliRunner

from avpipe.cli.train import train_cmd
from avpipe.fusion.models import get_model_class, model_listing, model_registry

PUBLISHED = ("jca", "rja", "rjcma", "dca", "maven")
VARIANTS = ("rja-shared", "rjcma-shared", "iaca", "maven-paper")


def test_every_name_is_registered_with_metadata():
    reg = model_registry()
    for n in PUBLISHED + VARIANTS:
        info = reg[n].info
        assert info is not None and info.paper and info.ours and info.summary, n
    for n in PUBLISHED:
        assert reg[n].info.code, n  # says what matches the authors' code
    assert get_model_class("iaca").info.code == "" and "no public code" in get_model_class("iaca").info.summary
    lines = model_listing()
    assert len(lines) == len(reg) and all(ln.split()[0] in reg for ln in lines)


def test_train_list_prints_every_model_with_paper_and_code_match():
    r = CliRunner().invoke(train_cmd, ["--list"])
    assert r.exit_code == 0, r.output
    for n in PUBLISHED + VARIANTS:
        assert any(ln.startswith(f"{n} ") for ln in r.output.splitlines()), n
    assert "arXiv 2304.07958" in r.output and "as the authors' code: no public code" in r.output
    assert "window 512f/32=16 tokens, batch 64, lr 0.001" in r.output


def test_train_help_lists_names_one_line_each():
    r = CliRunner().invoke(train_cmd, ["--help"])
    assert r.exit_code == 0
    for n in PUBLISHED + VARIANTS:
        assert sum(ln.strip().startswith(f"{n} ") for ln in r.output.splitlines()) == 1, n


def test_window_not_multiple_of_clip_is_a_usage_error(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    r = CliRunner().invoke(train_cmd, ["--fusion", "rja", "--labels", str(labels), "--window", "300",
                                       "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "window 300 is not a multiple of clip_len 32" in r.output
    r = CliRunner().invoke(train_cmd, ["--fusion", "nosuch", "--labels", str(labels), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "'nosuch' is not one of" in r.output and "rja-shared" in r.output
