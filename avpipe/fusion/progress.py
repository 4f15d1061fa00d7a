"""One-line progress for long work (sweeps): counts, ETA, lines that fit the terminal.

Why not tqdm here: a sweep's unit (a training run) takes minutes and prints its own epoch lines;
a redrawn bar would fight with them. A status line printed when a cell starts or ends, each
line cut to the terminal width, reads well both live and in a log file.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field


def terminal_width(default: int = 100) -> int:
    """Columns of the terminal (``COLUMNS`` honoured); ``default`` when not a terminal."""
    return max(40, shutil.get_terminal_size((default, 24)).columns)


def fit_line(text: str, width: int | None = None) -> str:
    """``text`` cut to one terminal line (an ellipsis marks the cut)."""
    w = width or terminal_width()
    text = text.replace("\n", " ")
    return text if len(text) <= w else text[: max(1, w - 1)] + "…"


def fmt_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class SweepProgress:
    """Counts of a sweep's cells and an ETA from the cells finished *in this call*.

    Skipped (already finished) cells count as done but not in the ETA: they took no time now.
    """

    total: int
    jobs: int = 1
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    started: float = field(default_factory=time.perf_counter)
    _trained: int = 0

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed

    def eta_s(self) -> float | None:
        if self._trained == 0:
            return None
        # throughput so far (cells per wall second, parallel workers included) over what is left
        return (time.perf_counter() - self.started) / self._trained * self.remaining

    def finished(self, ok: bool, trained: bool = True) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if trained:
            self._trained += 1

    def line(self, note: str = "") -> str:
        eta = self.eta_s()
        s = (f"[sweep {self.done + self.failed}/{self.total}] done {self.done} · running {self.running} · "
             f"failed {self.failed}" + (f" · skipped {self.skipped}" if self.skipped else "")
             + (f" · ETA {fmt_duration(eta)}" if eta is not None and self.remaining else "")
             + (f" · {note}" if note else ""))
        return fit_line(s)
