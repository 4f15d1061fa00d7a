"""Which filesystem holds the cache, and the index journal that is safe on it.

Why: the index is SQLite, by default in WAL mode, which needs shared memory (the ``-shm`` file,
mmap'ed) between every process that opens it. SQLite documents that WAL does not work over a
network filesystem: processes on two machines do not share that memory, and readers can see a
torn index. On NFS, CIFS, Lustre, GPFS, BeeGFS, CephFS and the like the index therefore uses
SQLite's rollback journal (``journal_mode=DELETE``), whose locks are ordinary POSIX byte-range
locks that those filesystems carry between machines. The cost: a reader waits while the single
writer commits (commits are one small transaction per task, so the wait is milliseconds).

``AVPIPE_INDEX_JOURNAL=wal|delete`` overrides the detection (a filesystem this list misses, or a
network filesystem only one machine uses).
"""
from __future__ import annotations

import os
from pathlib import Path

#: Filesystem types (as /proc/self/mountinfo names them) whose processes may sit on other machines.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs", "fuse.glusterfs",
    "ceph", "fuse.ceph", "fuse.cephfs", "fuse.sshfs", "9p", "afs", "ocfs2", "gfs2", "panfs", "wekafs",
    "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse", "davfs", "fuse.rclone",
})
JOURNAL_ENV = "AVPIPE_INDEX_JOURNAL"
_MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """``[(mount point, filesystem type)]`` from the text of ``/proc/self/mountinfo``."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        parts, rest = left.split(), right.split()
        if sep and len(parts) >= 5 and rest:
            mounts.append((_unescape(parts[4]), rest[0]))
    return mounts


def filesystem_type(path: str | Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (its nearest existing parent): the mount with
    the longest mount point that contains it. None where mountinfo cannot be read (not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = Path(_MOUNTINFO).read_text()
        except OSError:
            return None
    p = Path(path).expanduser().absolute()
    q = p
    while not q.exists() and q != q.parent:  # links resolved in the part that exists
        q = q.parent
    real = os.path.join(os.path.realpath(q), os.path.relpath(p, q)) if q != p else os.path.realpath(p)
    real = os.path.normpath(real)
    best: tuple[int, str] | None = None
    for mnt, fstype in parse_mountinfo(mountinfo):
        if real == mnt or real.startswith(mnt.rstrip("/") + "/") or mnt == "/":
            if best is None or len(mnt) >= best[0]:
                best = (len(mnt), fstype)
    return best[1] if best else None


def is_network_fs(path: str | Path) -> bool:
    return (filesystem_type(path) or "") in NETWORK_FS


def index_journal_mode(folder: str | Path) -> str:
    """``WAL`` on a local disk, ``DELETE`` (rollback journal) on a network filesystem, or what
    ``$AVPIPE_INDEX_JOURNAL`` says."""
    forced = os.environ.get(JOURNAL_ENV, "").strip().upper()
    if forced in ("WAL", "DELETE"):
        return forced
    return "DELETE" if is_network_fs(folder) else "WAL"
