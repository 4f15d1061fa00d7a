"""Shared fixtures: the committed talking-head clips and their ground truth.

Regenerate the clips with ``python tests/fixtures/make_media.py``.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Never reach a model hub from the tests: only packaged or locally built models.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MEDIA = Path(__file__).parent / "fixtures" / "media"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``cuda``-marked tests skip, with the reason, where torch sees no CUDA device (``make test``
    never needs a GPU; benchmarks/gpu_check.sh runs them on one). torch is imported only when a
    collected test carries the marker."""
    marked = [it for it in items if it.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for it in marked:
        it.add_marker(skip)


@dataclass
class Clip:
    path: Path
    truth: dict[str, Any]


def load_clip(name: str) -> Clip:
    p = MEDIA / name
    return Clip(p, json.loads((MEDIA / (p.stem + ".json")).read_text()))


@pytest.fixture(scope="session")
def talking_head() -> Clip:
    """7 s, 25 fps, one face, speech with word times."""
    return load_clip("talking_head.mp4")


@pytest.fixture(scope="session")
def two_faces_tone() -> Clip:
    """2 s, two faces, a 1 kHz tone burst at 1.0–1.2 s, no speech."""
    return load_clip("two_faces_tone.mp4")


@pytest.fixture(scope="session")
def no_face_no_audio() -> Clip:
    return load_clip("no_face_no_audio.mp4")


@pytest.fixture(scope="session")
def short_silent() -> Clip:
    """0.6 s, one face, silent audio track."""
    return load_clip("short_silent.mp4")


@pytest.fixture(scope="session")
def vfr_clip() -> Clip:
    """Variable frame rate, one face, no audio."""
    return load_clip("vfr.mp4")


@pytest.fixture()
def video_dir(tmp_path: Path) -> Path:
    """A fresh --videos folder holding copies of all committed clips."""
    d = tmp_path / "videos"
    d.mkdir()
    for p in MEDIA.glob("*.mp4"):
        shutil.copy(p, d / p.name)
    return d
