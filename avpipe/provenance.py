"""How a result was made: package versions, avpipe's git state, command line, host.

Why: the same video gives different features under another opencv or numpy, and the same config
another CCC under another torch. Shards and run folders record what this module reports, so
drift is visible (``avpipe inspect``, ``avpipe cache verify``, a run's ``run.json``) instead
of an unexplained difference between two machines.

Nothing here enters a fingerprint: versions describe *how* an entry was computed, not *what* was
asked for, and fingerprints must stay stable across machines that compute the same thing.
"""
from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
import uuid
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from avpipe.pipeline.types import Fingerprint

#: Distributions whose numerics the cached features depend on (decode, resize, detection,
#: embeddings, mel, ASR). Recorded per shard entry; packages not installed are left out.
NUMERICS = ("numpy", "torch", "torchvision", "torchaudio", "opencv-python-headless", "av", "facenet-pytorch",
            "scipy", "librosa", "soxr", "h5py", "openai-whisper", "transformers", "dlib-bin", "ctranslate2")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def numerics_versions() -> dict[str, str]:
    """Installed versions of :data:`NUMERICS` (cached: versions do not change in a process)."""
    return {n: v for n in NUMERICS if (v := _version(n)) is not None}


def packages_attr() -> str:
    """:func:`numerics_versions` as the JSON text a shard group stores (``packages_json``)."""
    import json

    return json.dumps(numerics_versions(), sort_keys=True)


def entry_provenance(fp: "Fingerprint") -> dict[str, Any]:
    """Group attrs of every cache entry, extracted or ingested: what was asked (the
    fingerprint's parts) and how it was made (``packages_json``: versions of the numerics
    packages in the process that wrote it; never in the fingerprint)."""
    import avpipe

    return {"stage": fp.stage, "version": fp.version, "fingerprint": fp.value,
            "config_json": fp.config_json, "weights_id": fp.weights_id or "",
            "upstream_json": fp.upstream_json(), "avpipe_version": avpipe.__version__,
            "packages_json": packages_attr()}


def installed_versions() -> dict[str, str]:
    """Every installed distribution and its version (a superset of the lock's packages)."""
    out: dict[str, str] = {}
    for d in metadata.distributions():
        name = d.metadata.get("Name")
        if name:
            out[str(name).lower().replace("_", "-")] = d.version
    return dict(sorted(out.items()))


def changed_packages(recorded: dict[str, str], now: dict[str, str] | None = None) -> list[str]:
    """``name old -> new`` for each recorded package whose installed version differs now."""
    now = numerics_versions() if now is None else now
    return [f"{n} {v} -> {now.get(n, 'not installed')}" for n, v in sorted(recorded.items()) if now.get(n) != v]


def checkout_root() -> Path | None:
    """The git checkout avpipe is imported from (an editable install), else None."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / ".git").exists() else None


def git_state(root: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of avpipe's checkout; None when avpipe is an installed package."""
    root = root or checkout_root()
    if root is None:
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "-s", "-uno"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def lock_drift(root: Path | None = None) -> list[str] | None:
    """Packages whose installed version differs from ``requirements.lock`` (checkouts only)."""
    import re

    root = root or checkout_root()
    lock = root / "requirements.lock" if root else None
    if lock is None or not lock.is_file():
        return None
    pins = {m[1].lower().replace("_", "-"): m[2]
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", lock.read_text(), re.M)}
    have = installed_versions()
    return [f"{n} {have.get(n, 'not installed')} (lock {v})" for n, v in sorted(pins.items()) if have.get(n) != v]


def environment_record(*, device: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """What a run folder's ``run.json`` records about the machine and software that made it."""
    import avpipe

    return {
        "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(sys.argv),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "avpipe": avpipe.__version__,
        "git": git_state(),
        "device": device,
        "threads": threads,
        "packages": installed_versions(),
        "lock_drift": lock_drift(),
    }
