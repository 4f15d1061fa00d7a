"""Runs are never lost: an existing run is refused without --resume/--overwrite, --resume must
match the run, the run works from another directory, bad --out and untrusted checkpoints are one
clear line (no traceback)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from avpipe.cli import main
from tests.fusion.conftest import small_config


def _cfg_file(corpus, tmp_path: Path, **kw) -> Path:
    cfg = small_config(corpus, "concat", tmp_path / "unused", model={"hidden": 8}, epochs=1, **kw)
    p = tmp_path / "cfg.json"
    cfg.save(p)
    return p


def _train(cfg_file: Path, out: Path, *extra: str, fusion: str = "concat"):
    return CliRunner().invoke(main, ["train", "--fusion", fusion, "--config", str(cfg_file), "--out", str(out),
                                     *extra])


def _one_error_line(r) -> str:
    assert "Traceback" not in r.output, r.output
    errs = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errs) == 1, r.output
    return errs[0]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    cfg_file = _cfg_file(corpus, d)
    out = d / "run"
    r = _train(cfg_file, out)
    assert r.exit_code == 0, r.output
    return cfg_file, out


def test_existing_run_is_refused_without_resume(run):
    cfg_file, out = run
    before = (out / "checkpoints" / "last.pt").read_bytes()
    r = _train(cfg_file, out, fusion="jca")
    assert r.exit_code == 2, r.output
    line = _one_error_line(r)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_with_another_model_is_refused(run):
    cfg_file, out = run
    r = _train(cfg_file, out, "--resume", fusion="jca")
    assert r.exit_code == 2, r.output
    assert "--fusion 'jca' but the run trains 'concat'" in _one_error_line(r)
    r = _train(cfg_file, out, "--resume", "--features", "visual=logmel")
    assert r.exit_code == 2 and "--features" in _one_error_line(r)


def test_overwrite_replaces_the_run_and_keeps_other_files(corpus, tmp_path):
    cfg_file = _cfg_file(corpus, tmp_path)
    out = tmp_path / "run"
    assert _train(cfg_file, out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "metrics.csv").write_text("stale\n")
    r = _train(cfg_file, out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "metrics.csv").read_text().startswith("epoch,")
    assert _train(cfg_file, out, "--overwrite", "--resume").exit_code == 2
    # an overwrite that cannot start (labels missing) leaves the old run in place
    bad = tmp_path / "bad.json"
    bad.write_text(cfg_file.read_text().replace(str(corpus["labels"]), str(tmp_path / "nolabels.csv")))
    before = (out / "checkpoints" / "last.pt").read_bytes()
    r = _train(bad, out, "--overwrite")
    assert r.exit_code == 1, r.output
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_out_pointing_at_a_file_is_a_clear_error(corpus, tmp_path):
    cfg_file = _cfg_file(corpus, tmp_path)
    f = tmp_path / "afile"
    f.write_text("x")
    for out in (f, f / "run"):
        r = _train(cfg_file, out)
        assert r.exit_code == 2, r.output
        assert "is a file" in _one_error_line(r)
    assert f.read_text() == "x"


def test_run_with_relative_paths_evaluates_from_another_directory(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(corpus["root"])
    cfg = small_config(corpus, "concat", tmp_path / "unused", model={"hidden": 8}, epochs=1,
                       cache="cache", labels="labels")
    cfg.save(tmp_path / "rel.json")
    out = tmp_path / "rel_run"
    assert _train(tmp_path / "rel.json", out).exit_code == 0
    saved = json.loads((out / "config.json").read_text())
    assert Path(saved["cache"]).is_absolute() and Path(saved["labels"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = CliRunner().invoke(main, ["evaluate", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "raw       V" in r.output


class Evil:  # not an allowed global for weights_only loading
    pass


def test_untrusted_checkpoint_is_one_clear_line(run, tmp_path):
    import shutil

    _, out = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    torch.save({"model": Evil()}, copy / "checkpoints" / "best.pt")
    r = CliRunner().invoke(main, ["evaluate", str(copy), "--device", "cpu"])
    assert r.exit_code == 1, r.output
    line = _one_error_line(r)
    assert "best.pt" in line and "refused" in line and "trust" in line
    (copy / "checkpoints" / "best.pt").write_bytes(b"\x00garbage")
    r = CliRunner().invoke(main, ["evaluate", str(copy), "--device", "cpu"])
    assert r.exit_code == 1 and "not a readable checkpoint" in _one_error_line(r)


def test_runtime_errors_exit_1_not_2(corpus, tmp_path):
    """A failure while working (here: labels that match no cached video) is exit 1, one line."""
    empty = tmp_path / "labels" / "Train_Set"
    empty.mkdir(parents=True)
    (empty / "nosuchvideo.txt").write_text("valence,arousal\n0.1,0.2\n")
    cfg_file = _cfg_file(corpus, tmp_path, labels=str(tmp_path / "labels"))
    r = _train(cfg_file, tmp_path / "r")
    assert r.exit_code == 1, r.output
    assert "need labelled videos in both train and val" in _one_error_line(r)
    assert not os.path.exists(tmp_path / "r" / "config.json")


def test_evaluate_a_folder_that_is_not_a_run_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 2 and "is not a run folder" in _one_error_line(r)


def test_resume_trains_in_the_folder_given_not_the_one_recorded(run, tmp_path, monkeypatch):
    """``cp -r runs/jca runs/jca2; train --out runs/jca2 --resume`` continued runs/jca (its
    config.json's relative ``out``) and left the copy unchanged; from another directory it
    created a new runs/jca there."""
    import shutil

    cfg_file, out = run
    monkeypatch.chdir(out.parent)
    orig = {p.name: p.read_bytes() for p in (out / "metrics.csv", out / "checkpoints" / "last.pt")}
    saved = json.loads((out / "config.json").read_text())
    assert Path(saved["out"]).is_absolute()
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["out"] = out.name  # as old runs recorded it: relative to where train ran
    (copy / "config.json").write_text(json.dumps(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = CliRunner().invoke(main, ["train", "--fusion", "concat", "--out", str(copy), "--resume", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert len((copy / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)
    assert {p.name: p.read_bytes() for p in (out / "metrics.csv", out / "checkpoints" / "last.pt")} == orig
    assert not (elsewhere / out.name).exists()
    assert json.loads((copy / "summary.json").read_text())["run"] == str(copy)


def test_run_records_how_it_was_made_and_logs_everything(corpus, tmp_path, monkeypatch):
    cfg_file = _cfg_file(corpus, tmp_path)
    out = tmp_path / "rec"
    monkeypatch.setattr("sys.argv", ["avpipe", "train", "--fusion", "concat", "--out", str(out)])
    r = _train(cfg_file, out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "epoch   0" not in r.output  # --quiet: progress only in run.log
    log = (out / "run.log").read_text()
    assert " INFO " in log and "epoch   0" in log and "[concat]" in log
    assert " DEBUG " in log and "command:" in log  # the file has every level
    rec = json.loads((out / "run.json").read_text())
    import torch as _t

    assert rec["packages"]["torch"] == _t.__version__.split("+")[0] or rec["packages"]["torch"] == _t.__version__
    assert rec["packages"]["numpy"] and rec["host"] and rec["device"] == "cpu" and rec["threads"] >= 1
    assert rec["command"] == f"avpipe train --fusion concat --out {out}" and len(rec["run_id"]) == 32
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert len(rec["git"]["commit"]) == 40 and isinstance(rec["git"]["dirty"], bool)
    r = _train(cfg_file, out, "--resume", "--epochs", "2", "--verbose")
    assert r.exit_code == 0, r.output
    assert "command:" in r.output  # --verbose shows debug lines
    again = json.loads((out / "run.json").read_text())
    assert again["run_id"] == rec["run_id"] and len(again["sessions"]) == 1
    assert (out / "run.log").read_text().startswith(log)  # appended, not replaced


def test_a_single_labelled_video_says_how_to_split(corpus, tmp_path):
    lab = tmp_path / "labels" / "Train_Set"
    lab.mkdir(parents=True)
    src = next((corpus["labels"] / "Train_Set").glob("*.txt"))
    (lab / src.name).write_text(src.read_text())
    r = _train(_cfg_file(corpus, tmp_path, labels=str(tmp_path / "labels")), tmp_path / "one")
    assert r.exit_code == 1, r.output
    line = _one_error_line(r)
    assert "need labelled videos in both train and val" in line
    assert "--split-file" in line and "val_fraction" in line and "1 labelled video" in line


def test_run_files_honour_the_umask(corpus, tmp_path):
    """Checkpoints, config.json, metrics.csv, predictions were 0600 (tempfile.mkstemp) whatever
    the umask: a lab's shared runs were unreadable by anyone but their writer."""
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "shared"
        assert _train(_cfg_file(corpus, tmp_path), out).exit_code == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"last.pt", "best.pt", "config.json", "metrics.csv", "run.json", "run.log"} <= {p.name for p in files}
    bad = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
           if stat.S_IMODE(p.stat().st_mode) != 0o644}
    assert not bad, bad


def test_run_log_records_why_a_resumed_run_ended(run, tmp_path):
    import shutil

    _, out = run
    copy = tmp_path / "broken"
    shutil.copytree(out, copy)
    (copy / "checkpoints" / "last.pt").write_bytes(b"\x00garbage")
    r = CliRunner().invoke(main, ["train", "--fusion", "concat", "--out", str(copy), "--resume", "--epochs", "3"])
    assert r.exit_code == 1 and "not a readable checkpoint" in _one_error_line(r)
    log = (copy / "run.log").read_text()
    assert " ERROR " in log and "run ended: CheckpointError" in log and "not a readable checkpoint" in log
