"""A switch that read-only commands flip: "compute what you can, write nothing anywhere".

Why: ``status``, ``inspect`` and the read API compute fingerprints, and a fingerprint needs the
checksum of the stage's weights. Resolving weights may download a file, convert a checkpoint
(Whisper: 75 MB) or update the checksum memo — writes a command documented as read-only must not
make. Weight resolution checks :func:`writes_allowed` and, when it is off, reports the weights as
not prepared instead of preparing them.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("avpipe_read_only", default=False)


@contextmanager
def read_only() -> Iterator[None]:
    """Within this block nothing is downloaded, converted or memoised to disk."""
    token = _READ_ONLY.set(True)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


def writes_allowed() -> bool:
    return not _READ_ONLY.get()
