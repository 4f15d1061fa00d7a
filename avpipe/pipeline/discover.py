"""Video discovery and content identity.

Two names per video (docs/cache.md#identity):

* the **key** — path relative to the ``--videos`` root, POSIX, Unicode NFC. It names things for
  people and is never used to build a path inside the cache;
* the **content id** — a streamed hash of the bytes. It names things for the cache, so the same
  bytes in two folders (or a moved folder) are one entry.

Hashing is the only expensive part of discovery, so content ids are memoised by
``(dev, inode, size, mtime_ns, ctime_ns)`` in the index (see
:meth:`avpipe.pipeline.index.Index.file_memo`): a warm run stats files and re-reads nothing. The
device is there because inode numbers repeat across filesystems; ctime because mtime can be set
back by anyone and ctime cannot.

A content id must never lie about the bytes a stage decoded. The stat facts it was computed
from travel with the video (:attr:`Video.identity`); a file that changes while it is hashed is
hashed again, and the runner re-stats each file after its stage has read it and discards the
result when the file changed (:func:`source_changed`).
"""
from __future__ import annotations

import errno
import hashlib
import os
import time
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Containers discovery picks up (case-insensitive). Audio-only containers are left out on
#: purpose: the pipeline is about videos; an audio-only file *named* like a video still gets a
#: clear per-video error from ``probe``.
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
    ".flv", ".wmv", ".3gp", ".ogv",
})

HASH_CHUNK = 1 << 20


def storable(text: str) -> str:
    """``text`` with undecodable file-name bytes (lone surrogates) as ``\\xNN``: what SQLite, JSON
    and a terminal can hold."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def normalize_key(rel: str) -> str:
    """The canonical key for a relative path: POSIX separators, NFC (macOS writes NFD names).

    A name that is not valid UTF-8 (any bytes a Linux filesystem allows; Python hands them over
    as lone surrogates) keeps its undecodable bytes as ``\\xNN`` text: a key is stored in the
    index and printed, and neither can hold a lone surrogate. The file itself is still opened
    by its real path."""
    return unicodedata.normalize("NFC", storable(rel.replace(os.sep, "/")))


def output_path_for(root: str | os.PathLike[str], key: str, suffix: str) -> Path:
    """Where a per-video output file for ``key`` goes under ``root`` (predictions, exports).

    Why a function: a key is user data (a relative path found on disk, or typed by a user).
    It is normalised, and absolute paths, drive letters, empty or ``..`` components are refused,
    so an output can never land outside ``root``.
    """
    norm = normalize_key(key)
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if not parts or norm.startswith("/") or any(p == ".." for p in parts) or ":" in parts[0]:
        raise ValueError(f"video key {key!r} cannot name an output file (absolute or escapes the folder)")
    rel = Path(*parts)
    out = Path(root) / rel.with_name(rel.stem + suffix)
    return out


def content_hash(path: str | os.PathLike[str]) -> str:
    """blake2b-160 of the file's bytes, streamed in 1 MiB chunks (hex, 40 characters).

    The one file hash in avpipe: a video's content id and a shard's checksum in the index are
    both this, so re-checking a shard's bytes and rebuilding the index compare like with like."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FoundFile:
    """A discovered file with the stat facts the content-id memo is keyed by."""

    key: str
    path: Path  # absolute (symlinks not resolved: the user's view)
    size: int
    mtime_ns: int
    inode: int
    dev: int = 0
    ctime_ns: int = 0

    @property
    def memo_key(self) -> tuple[int, int, int, int, int]:
        return (self.dev, self.inode, self.size, self.mtime_ns, self.ctime_ns)

    @classmethod
    def from_stat(cls, key: str, path: Path, st: os.stat_result) -> "FoundFile":
        return cls(key, path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


def stat_identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The facts that change whenever a file's bytes may have: (dev, inode, size, mtime, ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def source_changed(path: str | os.PathLike[str], identity: tuple[int, ...] | None) -> str | None:
    """Why ``path`` is no longer the file whose bytes were hashed (None: unchanged, or nothing
    recorded to compare with). Called after a stage has read the file: if this says nothing,
    the bytes it decoded are the bytes the content id names."""
    if identity is None:
        return None
    try:
        now = stat_identity(os.stat(path))
    except OSError as e:
        return f"the file vanished or became unreadable while it was processed ({e.strerror})"
    if now == tuple(identity):
        return None
    names = ("device", "inode", "size", "modification time", "change time")
    what = [n for n, a, b in zip(names, identity, now) if a != b]
    return ("the file changed while it was processed (" + ", ".join(what) + " differ from when it "
            "was hashed)")


@dataclass(frozen=True)
class SkippedPath:
    """A path discovery did not use as a video, and why (reported by ``extract``).

    ``collision``: two different names that are one key after normalisation (``café`` written
    in NFC and in NFD): the later one is not processed, and ``extract`` always says so."""

    key: str
    reason: str
    collision: bool = False


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _spelled(name: str) -> str:
    """A name with its exact code points (and undecodable bytes) visible: ``'cafe\\u0301.mp4'``."""
    return ascii(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def _why_unusable(path: str) -> str:
    """Why a video-named entry that is not a regular file cannot be read."""
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "symlink loop"
            if e.errno == errno.ENOENT:
                return f"dangling symlink (target {os.readlink(path)!r} does not exist)"
            return f"symlink target unreadable ({e.strerror})"
    return "not a regular file"


def skipped_paths(root: str | os.PathLike[str],
                  extensions: frozenset[str] = VIDEO_EXTENSIONS) -> list[SkippedPath]:
    """The paths :func:`iter_video_files` skips under ``root`` (without the usable files)."""
    skipped: list[SkippedPath] = []
    if Path(root).expanduser().is_dir():
        for _ in iter_video_files(root, extensions, skipped=skipped):
            pass
    return skipped


def iter_video_files(root: str | os.PathLike[str],
                     extensions: frozenset[str] = VIDEO_EXTENSIONS, *,
                     skipped: list[SkippedPath] | None = None) -> Iterator[FoundFile]:
    """Walk ``root`` recursively and yield video files in sorted key order.

    * hidden files and folders (``.name``) are skipped;
    * symlinked folders are followed, but each real folder is walked once (no loops, no
      duplicates through two links); symlinked files are followed (stat of the target);
    * broken links, link loops, unreadable entries and folders named like videos are skipped;
      when ``skipped`` is given, each one with a video extension (and each folder walked twice or
      unreadable) is appended to it, so the caller can say so instead of staying silent;
    * ``root`` may also be one file: its key is its name.
    """
    rootp = Path(root).expanduser().absolute()
    if rootp.is_file():
        yield FoundFile.from_stat(normalize_key(rootp.name), rootp, rootp.stat())
        return
    if not rootp.is_dir():
        raise FileNotFoundError(f"videos folder not found: {rootp}")
    seen_dirs: set[tuple[int, int]] = set()
    seen_keys: dict[str, str] = {}  # key -> the name (as found) that has it
    out: list[FoundFile] = []

    def skip(rel: str, reason: str, collision: bool = False) -> None:
        if skipped is not None:
            skipped.append(SkippedPath(normalize_key(rel), reason, collision))

    def walk(d: Path, rel: str) -> None:
        try:
            st = d.stat()
        except OSError as e:
            skip(rel, f"cannot read folder ({e.strerror})")
            return
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            skip(rel, "folder already walked (symlink loop or a second link to it)")
            return
        seen_dirs.add(ident)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            skip(rel or ".", f"cannot list folder ({e.strerror})")
            return
        for e in entries:
            if _is_hidden(e.name):
                continue
            child_rel = f"{rel}/{e.name}" if rel else e.name
            video_named = os.path.splitext(e.name)[1].lower() in extensions
            try:
                if e.is_dir(follow_symlinks=True):
                    if video_named:
                        skip(child_rel, "a folder, not a video file (its contents are searched)")
                    walk(Path(e.path), child_rel)
                    continue
                if not video_named:
                    continue
                if not e.is_file(follow_symlinks=True):
                    skip(child_rel, _why_unusable(e.path))
                    continue
                fst = os.stat(e.path)  # follows a symlinked file to its target
            except OSError as err:  # permission denied, a link loop: not a video we can read
                skip(child_rel, _why_unusable(e.path) if e.is_symlink() else f"unreadable ({err.strerror})")
                continue
            key = normalize_key(child_rel)
            if key in seen_keys:  # NFC and NFD spellings of one name: keep the first, say so
                skip(child_rel, f"name collision: {_spelled(child_rel)} and {_spelled(seen_keys[key])} are one "
                                f"name after Unicode normalisation ({key!r}); only {_spelled(seen_keys[key])} "
                                "was processed: rename one of them", collision=True)
                continue
            seen_keys[key] = child_rel
            out.append(FoundFile.from_stat(key, Path(e.path), fst))

    walk(rootp, "")
    out.sort(key=lambda f: f.key)
    yield from out


@dataclass(frozen=True)
class Video:
    """A discovered file with its content id (``hashed`` says whether this run had to read it)."""

    key: str
    path: Path
    content_id: str
    size: int
    mtime_ns: int
    inode: int
    hashed: bool = False
    dev: int = 0
    ctime_ns: int = 0

    @property
    def identity(self) -> tuple[int, int, int, int, int]:
        """The stat facts the content id was computed from (see :func:`source_changed`)."""
        return (self.dev, self.inode, self.size, self.mtime_ns, self.ctime_ns)


#: How often a file that keeps changing while it is hashed is hashed again before giving up.
HASH_TRIES = 3


def _hash_stable(f: FoundFile) -> tuple[FoundFile, str]:
    """Hash ``f`` and make sure it did not change meanwhile (stat before and after equal), so
    the id names the bytes that carry these stat facts. Raises OSError when unreadable."""
    for _ in range(HASH_TRIES):
        cid = content_hash(f.path)
        now = FoundFile.from_stat(f.key, f.path, os.stat(f.path))
        if now.memo_key == f.memo_key:
            return f, cid
        f = now
    raise OSError(errno.EBUSY, f"it kept changing while it was hashed ({HASH_TRIES} tries)")


def identify(files: list[FoundFile], memo: Mapping[tuple[int, ...], str]) -> list[Video]:
    """Content ids for ``files``: memo hit by (dev, inode, size, mtime_ns, ctime_ns), else hash
    the bytes.

    An unreadable file (or one that keeps changing) still gets an id (of its path and the error)
    so that it reaches ``probe`` and gets a clear per-video error instead of aborting discovery.
    """
    out: list[Video] = []
    for f in files:
        cid = memo.get(f.memo_key)
        hashed = False
        if cid is None:
            try:
                f, cid = _hash_stable(f)
            except OSError as e:
                cid = "unreadable-" + hashlib.blake2b(
                    f"{f.key}|{e}|{time.time_ns()}".encode(), digest_size=8).hexdigest()
            hashed = True
        out.append(Video(f.key, f.path, cid, f.size, f.mtime_ns, f.inode, hashed, f.dev, f.ctime_ns))
    return out
