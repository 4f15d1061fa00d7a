"""Docstrings and comments say what is, not one machine's timings.

Why: a figure like "~50 ms per frame" or "3× faster" was true on the machine that measured it,
once; in a docstring it goes stale unseen. Figures live in BENCHMARKS.md with the command that
produced them, and the code points there. (Unit facts such as "every 10 ms" are not timings.)
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "avpipe"

#: A speed-up or slow-down factor, or a duration per unit of work.
TIMING = re.compile(
    r"[~≈]?\s?\d+(?:\.\d+)?\s?[×x]\s(?:faster|slower)"         # 3× faster, ~10x slower
    r"|[~≈]\s?\d+(?:\.\d+)?\s?(?:ms|s|µs|us)\b(?!\s*(?:at|of audio|windows?|steps?))"  # ~50 ms
    r"|\d+(?:\.\d+)?\s?(?:ms|s)\s(?:per|for\sa)\s(?:frame|video|call|epoch|batch)"  # 12 ms per frame
    r"|\d+(?:\.\d+)?\s?(?:frames|videos|windows)/s\b")


def prose(source: str) -> list[tuple[int, str]]:
    """(line, text) of every docstring-like string and comment of a module."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.string.lstrip("rbuRBU").startswith(('"""', "'''"))):
            out.append((tok.start[0], tok.string))
    return out


def timings(source: str) -> list[str]:
    return [f"{line}: {m.group(0)}" for line, text in prose(source) for m in TIMING.finditer(text)]


def test_no_module_quotes_one_machines_timings():
    found = {str(f.relative_to(PKG.parent)): t for f in sorted(PKG.rglob("*.py"))
             if (t := timings(f.read_text(encoding="utf-8")))}
    assert found == {}


@pytest.mark.parametrize("text", ['"""The pyramid costs ~50 ms for a frame."""', "# ~10x faster than NCHW",
                                  '"""runs ~3× faster (bench)"""', '"""12 ms per frame on one core"""',
                                  "# 300 frames/s on a laptop"])
def test_the_rule_sees_a_timing(text):
    assert timings(text + "\n") != []


@pytest.mark.parametrize("text", ['"""frames every 10 ms, 25 ms windows"""', "# 20 ms at 16 kHz",
                                  '"""window = 32 / fps ≈ 1.07 s at 30 fps"""', '"""cost 32× less memory"""'])
def test_the_rule_leaves_unit_facts_alone(text):
    assert timings(text + "\n") == []
