"""Make a cache read-only for a test, even as root, and compare it file by file before/after.

Tests may run as root, where ``chmod a-w`` stops nothing: there the files and folders are also
made immutable (``chattr +i``, on ext4 and friends); where that is impossible the test is skipped.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()} | {".": (0, root.stat().st_mtime_ns)}


def _chattr(flag: str, paths: list[Path]) -> bool:
    if not shutil.which("chattr") or not paths:
        return False
    r = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return r.returncode == 0


class ReadOnly:
    """Make ``paths`` read-only for this process (chmod a-w; as root also chattr +i)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.modes = {p: p.stat().st_mode for p in paths}
        self.immutable = False

    def __enter__(self) -> "ReadOnly":
        for p in self.paths:
            p.chmod(stat.S_IMODE(self.modes[p]) & ~0o222)
        if os.geteuid() == 0:
            self.immutable = _chattr("+i", self.paths)
            if not self.immutable:
                self.__exit__()
                pytest.skip("running as root and cannot make files immutable (chattr)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.immutable:
            _chattr("-i", self.paths)
        for p, m in self.modes.items():
            p.chmod(stat.S_IMODE(m))


def tree(root: Path) -> list[Path]:
    return [root, *sorted(root.rglob("*"))]
