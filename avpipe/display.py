"""Printing user-controlled text (video keys, file names, messages that quote them) safely.

Why: a video key is whatever name a file has on disk. Printed raw, a name holding a newline can
forge a fake ``FAILED`` line in a summary, and one holding escape codes can recolour or rewrite
the user's terminal (or a log viewer). Every place that prints such a name goes through
:func:`safe_name` (or :func:`safe_text` for a message that may quote one).
"""
from __future__ import annotations

import os


def safe_name(name: object) -> str:
    """``name`` unchanged when every character is printable, else its ``repr`` (quoted, escaped).

    The quotes make an escaped name unambiguous: ``'a\\nb'`` cannot be confused with a name that
    really contains a backslash and an ``n``. Surrogate escapes from undecodable file names
    (``os.fsdecode``) are not printable either, so they are escaped too (and never make
    ``print`` raise ``UnicodeEncodeError``).
    """
    s = os.fspath(name) if isinstance(name, os.PathLike) else name
    if isinstance(s, bytes):
        return repr(s)
    s = str(s)
    return s if s.isprintable() else repr(s)


def safe_text(text: object) -> str:
    """A message with its control and other non-printable characters escaped in place.

    Unlike :func:`safe_name` the text is not quoted (it is prose, not one name): only the
    offending characters become ``\\n``, ``\\x1b``, ``\\u202e`` … so the result is one line.
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
