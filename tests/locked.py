"""Read requirements.lock, and hold numerics-dependent tests to it.

Tests whose expected values depend on package numerics (stored digests of decoded frames, MTCNN boxes,
embeddings) call :func:`require_locked` first: in an environment whose numerics packages differ from
the lock they fail with a message naming each drifted package, instead of failing on a digest with no
explanation (or being skipped as "another machine").
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"

#: The packages whose numerics features depend on (decode, resize, detection, embeddings, mel).
NUMERICS = ("numpy", "torch", "opencv-python-headless", "av", "facenet-pytorch", "scipy", "librosa",
            "soxr", "h5py", "openai-whisper", "transformers", "dlib-bin")

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.M)


def locked_versions() -> dict[str, str]:
    """Canonical package name -> the version requirements.lock pins."""
    return {canonicalize_name(m[1]): m[2] for m in _PIN.finditer(LOCK.read_text())}


def drifted(packages: tuple[str, ...] = NUMERICS) -> list[str]:
    pins = locked_versions()
    out = []
    for name in packages:
        key = canonicalize_name(name)
        if key not in pins:
            continue
        try:
            installed = metadata.version(key)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pins[key]:
            out.append(f"{key} {installed} (the lock has {pins[key]})")
    return out


def require_locked(packages: tuple[str, ...] = NUMERICS) -> None:
    """Fail the calling test, naming each package, when its numerics are not the lock's."""
    bad = drifted(packages)
    if bad:
        pytest.fail(
            "expected values were recorded with requirements.lock's numerics; this environment differs: "
            + ", ".join(bad) + " (reinstall: make clean-venv test)"
        )
