"""Safe output: user-controlled names are printed escaped (a newline cannot forge a FAILED line,
escape codes never reach the terminal); discovery says which paths it skipped."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.display import safe_name, safe_text
from tests.media import make_clip


@pytest.fixture(autouse=True, scope="module")
def _toy():
    from tests.pipeline import toy_stages as ts

    ts.register()
    yield
    ts.unregister()


def test_safe_name_and_text():
    assert safe_name("clips/a b.mp4") == "clips/a b.mp4"
    assert safe_name("a\nFAILED b.mp4") == "'a\\nFAILED b.mp4'"
    assert safe_name("\x1b[2Jx.mp4") == "'\\x1b[2Jx.mp4'"
    assert safe_name("x\u202egnp.mp4") == "'x\\u202egnp.mp4'"  # right-to-left override
    assert safe_name(os.fsdecode(b"caf\xe9.mp4")).isascii()  # undecodable bytes: escaped, printable
    assert safe_text("cannot open 'a\nb'\x1b[0m") == "cannot open 'a\\nb'\\x1b[0m"


def test_failed_line_cannot_be_forged_and_escapes_never_print(tmp_path):
    v = tmp_path / "videos"
    make_clip(v / "good.mp4", seed=1)
    (v / "bad\n  FAILED probe forged.mp4").write_text("not a video")
    (v / "\x1b[31mred.mp4").write_text("not a video either")
    r = CliRunner().invoke(main, ["extract", "--videos", str(v), "--cache", str(tmp_path / "c"), "--stages",
                                  "toy_a", "--no-progress"])
    assert r.exit_code == 1, r.output
    failed = [ln for ln in r.output.splitlines() if ln.lstrip().startswith("FAILED")]
    assert len(failed) == 2, r.output
    assert "\x1b" not in r.output
    assert any("'bad\\n  FAILED probe forged.mp4'" in ln for ln in failed)
    assert any("'\\x1b[31mred.mp4'" in ln for ln in failed)
    ins = CliRunner().invoke(main, ["inspect", "bad\n  FAILED probe forged.mp4", "--cache", str(tmp_path / "c")])
    assert ins.exit_code == 0 and "\x1b" not in ins.output
    assert not [ln for ln in ins.output.splitlines() if ln.lstrip().startswith("FAILED probe forged")], ins.output
    assert "keys: 'bad\\n  FAILED probe forged.mp4'" in ins.output


def test_skipped_paths_are_counted_and_listed_with_verbose(tmp_path):
    v = tmp_path / "videos"
    make_clip(v / "good.mp4", seed=1)
    (v / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (v / "loop.mp4").symlink_to(v / "loop.mp4")
    (v / "folder.mp4").mkdir()
    (v / "sub").mkdir()
    (v / "sub" / "up").symlink_to(v)
    args = ["extract", "--videos", str(v), "--cache", str(tmp_path / "c"), "--stages", "toy_a", "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "4 path(s) skipped during discovery" in r.output and "--verbose lists them" in r.output
    r = CliRunner().invoke(main, [*args, "--verbose"])
    lines = [ln.strip() for ln in r.output.splitlines() if ln.strip().startswith("skipped ")]
    reasons = dict(ln[len("skipped "):].split(": ", 1) for ln in lines)
    assert reasons["dangling.mp4"].startswith("dangling symlink")
    assert reasons["loop.mp4"] == "symlink loop"
    assert reasons["folder.mp4"].startswith("a folder, not a video file")
    assert reasons["sub/up"].startswith("folder already walked")
