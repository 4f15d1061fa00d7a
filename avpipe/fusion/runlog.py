"""A run's ``run.log`` and its console output: one stream of messages with levels.

Why: a run folder must say how it went without the terminal it ran in. Every message of
training (progress lines, warnings about the data, the environment) goes through one
:class:`RunLog`, which writes it to ``<run>/run.log`` through Python :mod:`logging` (timestamp,
level; everything, whatever the console shows) and to the console callable the caller gave
(``print``, ``click.echo``) when its level reaches the console threshold (``--quiet``: warnings
and errors only; ``--verbose``: debug lines too).

``warnings.warn`` raised while training is routed through the same stream, as
``warning: <message>`` — not Python's ``/path/train.py:216: UserWarning: ... prep = prepare(...)``.
Messages logged before the run folder exists (loading the data can warn) are kept and written
once it is created, so a run that fails to start leaves no folder behind.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOG_NAME = "run.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
_console_level = logging.INFO


def set_console_level(*, quiet: bool = False, verbose: bool = False) -> None:
    """``--quiet`` shows warnings and errors only, ``--verbose`` debug lines too."""
    global _console_level
    _console_level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO


def console_level() -> int:
    return _console_level


class RunLog:
    """Messages of one training run: to ``run.log`` (all levels) and to ``console`` (by level)."""

    def __init__(self, console: Callable[[str], None] | None = print, level: int | None = None) -> None:
        self.console = console
        self.level = _console_level if level is None else level
        self.logger = logging.getLogger(f"avpipe.run.{id(self):x}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self._pending: list[logging.LogRecord] = []
        self._handler: logging.Handler | None = None

    def open(self, run_path: str | Path) -> None:
        """Start writing ``<run_path>/run.log`` (appended to on resume); flush what came before."""
        if self._handler is not None:
            return
        h = logging.FileHandler(Path(run_path) / LOG_NAME, mode="a", encoding="utf-8")
        h.setFormatter(logging.Formatter(_FORMAT))
        self._handler = h
        self.logger.addHandler(h)
        for rec in self._pending:
            h.handle(rec)
        self._pending.clear()

    def close(self) -> None:
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def to_file(self, level: int, msg: str) -> None:
        """``run.log`` only (kept until the file is opened; dropped if the run never starts)."""
        rec = self.logger.makeRecord(self.logger.name, level, "avpipe", 0, msg, None, None)
        if self._handler is None:
            self._pending.append(rec)
        else:
            self.logger.handle(rec)

    def log(self, level: int, msg: str) -> None:
        self.to_file(level, msg)
        if self.console is not None and level >= self.level:
            self.console(msg if level < logging.WARNING else f"{logging.getLevelName(level).lower()}: {msg}")

    def info(self, msg: str) -> None:
        self.log(logging.INFO, msg)

    def debug(self, msg: str) -> None:
        self.log(logging.DEBUG, msg)

    def warning(self, msg: str) -> None:
        self.log(logging.WARNING, msg)

    __call__ = info  # usable wherever a ``log(str)`` callable is expected

    @contextlib.contextmanager
    def capturing_warnings(self) -> Iterator["RunLog"]:
        """Route ``warnings.warn`` inside the block to this log (level WARNING, no source line)."""
        with warnings.catch_warnings():
            warnings.simplefilter("default")

            def show(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                     line: Any = None) -> None:
                self.warning(str(message))

            warnings.showwarning = show
            try:
                yield self
            finally:
                self.close()
