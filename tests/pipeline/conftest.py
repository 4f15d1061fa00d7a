"""Fixtures for pipeline tests: toy stages registered for the module, tiny real clips."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.media import make_clip


@pytest.fixture(autouse=True, scope="module")
def toy_stages():
    """Register the toy stages for this module only (other packages' tests never see them)."""
    from tests.pipeline import toy_stages as ts

    ts.register()
    yield ts
    ts.unregister()


@pytest.fixture(scope="session")
def clip_bank(tmp_path_factory) -> Path:
    """A few clips made once per session; tests copy them (copies keep bytes, change inodes)."""
    d = tmp_path_factory.mktemp("bank")
    for i in range(4):
        make_clip(d / f"c{i}.mp4", seed=i, audio=(i % 2 == 0), seconds=1.0 + 0.5 * (i % 2))
    return d


@pytest.fixture()
def videos(tmp_path, clip_bank) -> Path:
    """videos/ with 4 distinct clips, one in a subfolder with a non-ASCII name and a space."""
    v = tmp_path / "videos"
    (v / "sub dir").mkdir(parents=True)
    shutil.copy(clip_bank / "c0.mp4", v / "a.mp4")
    shutil.copy(clip_bank / "c1.mp4", v / "b.mp4")
    shutil.copy(clip_bank / "c2.mp4", v / "sub dir" / "é video.mp4")
    shutil.copy(clip_bank / "c3.mp4", v / "sub dir" / "a.mp4")  # same stem, other folder
    return v


class ToyLog:
    """Reads $AVPIPE_TOY_LOG: which (stage, content id) were actually computed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        return [tuple(line.split()) for line in self.path.read_text().splitlines()]  # type: ignore[misc]

    def count(self, stage: str) -> int:
        return sum(1 for s, _ in self.lines() if s == stage)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture()
def toy_log(tmp_path, monkeypatch) -> ToyLog:
    p = tmp_path / "toy.log"
    monkeypatch.setenv("AVPIPE_TOY_LOG", str(p))
    return ToyLog(p)
