"""The documentation the code cites lives in the repository, and every citation resolves.

Why: comments such as "see docs/models.md#rja" are only useful to someone who cloned avpipe if
the page and the heading exist. Two checks over the tracked text files:

* nothing cites documents outside the repository (design notes that were never committed, section
  numbers of such notes);
* every ``docs/<page>.md#<anchor>`` reference, and every relative link between pages of docs/,
  names an existing page and a heading of it (GitHub's anchor rules).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCOPE_DIRS = ("avpipe", "tests", "docs", "benchmarks", "configs")
SCOPE_FILES = ("README.md", "BENCHMARKS.md", "Makefile", "pyproject.toml")

# Written in pieces so that this file does not flag itself.
OUTSIDE = ("shared" + "/docs", "../" + "shared", "design" + ".md", "env" + ".md",
           "anchors" + ".md", "seeds" + ".md", "\u00a7")
MODELS_MD = re.compile(r"models\.md")
DOC_REF = re.compile(r"docs/([A-Za-z0-9_\-]+\.md)(?:#([\w\-]+))?")
LOCAL_LINK = re.compile(r"\]\((?:\./)?([A-Za-z0-9_\-]+\.md)?(?:#([\w\-]+))?\)")


def tracked_text_files() -> list[Path]:
    """Files in scope that git tracks or would track (not ignored), or every file on disk when
    this is not a git checkout; binary files (test media) are left out."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                              *SCOPE_DIRS, *SCOPE_FILES], cwd=ROOT,
                             capture_output=True, check=True, timeout=30).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for d in SCOPE_DIRS for p in (ROOT / d).rglob("*") if p.is_file()]
        paths += [ROOT / f for f in SCOPE_FILES]
    files = []
    for p in paths:
        try:
            raw = p.read_bytes()
        except OSError:
            continue
        if b"\0" in raw:
            continue  # binary (test media)
        files.append(p)
    return files


def outside_citations(text: str, in_docs: bool) -> list[str]:
    """The citations of documents outside the repository in ``text``.

    The models page may be named as ``docs/models.md``, and by its bare name inside docs/.
    """
    found = [s for s in OUTSIDE if s in text]
    for m in MODELS_MD.finditer(text):
        before = text[max(0, m.start() - 5):m.start()]
        if before != "docs/" and not in_docs:
            found.append(text[max(0, m.start() - 20):m.end()])
    return found


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (fenced code skipped; duplicates get -1, -2 …)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_slugs_follow_github_rules(tmp_path: Path) -> None:
    assert github_slug("IACA (and DCA)") == "iaca-and-dca"
    assert github_slug("`_left` and `_right`") == "_left-and-_right"
    assert github_slug("JCA-v1") == "jca-v1"
    page = tmp_path / "p.md"
    page.write_text("# A\n## Decisions\n```bash\n# not a heading\n```\n## Decisions\n", encoding="utf-8")
    assert anchors(page) == {"a", "decisions", "decisions-1"}


def test_outside_citation_detector_catches_each_form() -> None:
    for bad in ("see " + "design" + ".md", "(models" + ".md \u00a73)", "../" + "shared" + "/docs/x",
                "env" + ".md Appendix A", "as models" + ".md proposes"):
        assert outside_citations(bad, in_docs=False), bad
    assert not outside_citations("see docs/models.md#rja", in_docs=False)
    assert not outside_citations("[page](" + "models" + ".md#rja)", in_docs=True)


def test_no_citation_of_documents_outside_the_repository() -> None:
    bad = []
    for p in tracked_text_files():
        rel = p.relative_to(ROOT)
        text = p.read_text(encoding="utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            for hit in outside_citations(line, in_docs=rel.parts[0] == "docs"):
                bad.append(f"{rel}:{i}: {hit!r}")
    assert not bad, "cite docs/ pages instead:\n" + "\n".join(bad)


def test_every_docs_reference_resolves() -> None:
    cache: dict[Path, set[str]] = {}

    def check(page: Path, anchor: str | None, where: str, problems: list[str]) -> None:
        if not page.is_file():
            problems.append(f"{where}: no page {page.relative_to(ROOT)}")
            return
        if anchor and anchor not in cache.setdefault(page, anchors(page)):
            problems.append(f"{where}: no heading #{anchor} in {page.relative_to(ROOT)}")

    problems: list[str] = []
    n = 0
    for p in tracked_text_files():
        rel = p.relative_to(ROOT)
        text = p.read_text(encoding="utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            for m in DOC_REF.finditer(line):
                if line[:m.start()].endswith("shared/"):
                    continue  # reported by the outside-citation test
                n += 1
                check(DOCS / m.group(1), m.group(2), f"{rel}:{i}", problems)
            if rel.parts[0] == "docs" and p.suffix == ".md":
                for m in LOCAL_LINK.finditer(line):
                    if m.group(1) or m.group(2):
                        n += 1
                        check(p.parent / m.group(1) if m.group(1) else p, m.group(2), f"{rel}:{i}", problems)
    assert n > 0, "no docs references found: is the scan broken?"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", ["README", "models", "cache", "stages", "affwild2"])
def test_docs_pages_exist(page: str) -> None:
    assert (DOCS / (page + ".md")).is_file()
