"""The lock file is the one place versions are decided.

`make test`, `make demo` and CI install ``requirements.lock`` (every package pinned, with hashes), so a
fresh machine next month gets the versions this commit was tested with. These tests fail when
``pyproject.toml`` and the lock disagree (refresh with ``tools/lock.sh``) and when the running
environment is not the lock's (reinstall with ``make clean-venv test``).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.locked import LOCK, locked_versions

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """Every requirement of the install `make test` does: the base and the extras, self-references expanded."""
    project = _project()
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    todo = [Requirement(r) for r in project["dependencies"]]
    seen_extras: set[str] = set()
    pending = list(extras)
    while pending:
        extra = pending.pop()
        if extra in seen_extras:
            continue
        seen_extras.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                pending.extend(req.extras)
            else:
                todo.append(req)
    return todo


def test_lock_pins_every_requirement_with_hashes():
    text = LOCK.read_text()
    blocks = re.findall(r"^([A-Za-z0-9][^\s=]*)==\S+((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M)
    assert len(blocks) == len(locked_versions()) > 50
    unhashed = [name for name, hashes in blocks if "--hash=sha256:" not in hashes]
    assert not unhashed, f"pinned without a hash in {LOCK.name}: {unhashed}"
    assert "avpipe @" not in text, "the lock must not name avpipe itself (installed from the checkout)"


def test_lock_satisfies_pyproject():
    pins = locked_versions()
    problems = []
    for req in _requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} but the lock pins {name}=={pins[name]}")
    assert not problems, (
        "pyproject.toml and requirements.lock disagree (run tools/lock.sh):\n  " + "\n  ".join(problems)
    )


def test_environment_is_the_lock():
    pins = locked_versions()
    drift = []
    for name, version in sorted(pins.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            drift.append(f"{name}=={version} is locked but not installed")
            continue
        if installed != version:
            drift.append(f"{name}: locked {version}, installed {installed}")
    if drift:
        pytest.fail(
            "this environment is not requirements.lock's (reinstall: make clean-venv test):\n  "
            + "\n  ".join(drift)
        )
