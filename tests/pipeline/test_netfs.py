"""The index on a shared filesystem: a rollback journal where WAL is unsafe, a lock that names
its host. A real NFS mount is not available on CI: the filesystem type is read from a mountinfo
text, and the journal choice is checked on a real index."""
from __future__ import annotations

import socket
import sqlite3

import pytest

from avpipe.pipeline import netfs
from avpipe.pipeline.index import Index
from avpipe.pipeline.lock import CacheLock

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /shared rw,relatime shared:20 - nfs4 fs01:/export rw,vers=4.2
41 40 0:51 / /shared/local\\040scratch rw - tmpfs tmpfs rw
42 22 0:52 / /lustre rw - lustre 10.0.0.1@o2ib:/fs rw
"""


def test_filesystem_type_is_the_longest_mount_that_holds_the_path():
    assert netfs.filesystem_type("/shared/cache", MOUNTINFO) == "nfs4"
    assert netfs.filesystem_type("/shared/local scratch/cache", MOUNTINFO) == "tmpfs"  # escaped space
    assert netfs.filesystem_type("/sharedness/cache", MOUNTINFO) == "ext4"  # a prefix is not a parent
    assert netfs.filesystem_type("/lustre/proj/cache", MOUNTINFO) == "lustre"
    assert netfs.filesystem_type("/proc/self") == "proc"  # this machine's own mountinfo


def _mode(path) -> str:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("PRAGMA journal_mode").fetchone()[0].upper()
    finally:
        db.close()


def test_index_uses_a_rollback_journal_on_a_network_filesystem(tmp_path, monkeypatch):
    local = Index(tmp_path / "local" / "index.sqlite")
    local.close()
    assert _mode(tmp_path / "local" / "index.sqlite") == "WAL"
    monkeypatch.setattr(netfs, "filesystem_type", lambda path, mountinfo=None: "nfs4")
    # a new index there, and an existing WAL index opened there: both leave WAL
    for where in ("nfs", "local"):
        ix = Index(tmp_path / where / "index.sqlite")
        assert ix.journal_mode == "DELETE"
        ix.close()
        assert _mode(tmp_path / where / "index.sqlite") == "DELETE"
        assert not (tmp_path / where / "index.sqlite-wal").exists()
    ro = Index(tmp_path / "nfs" / "index.sqlite", readonly=True)  # readers read it, never write
    ro.close()
    monkeypatch.setenv(netfs.JOURNAL_ENV, "wal")  # the user's word wins
    ix = Index(tmp_path / "nfs" / "index.sqlite")
    assert ix.journal_mode == "WAL"
    ix.close()


def test_the_lock_names_host_and_pid(tmp_path):
    import os

    with CacheLock(tmp_path, say=lambda m: None):
        text = (tmp_path / ".lock").read_text()
    assert f"pid {os.getpid()} on {socket.gethostname()}" in text


@pytest.mark.parametrize("fstype,net", [("nfs", True), ("ext4", False), ("fuse.sshfs", True), ("xfs", False)])
def test_network_types(fstype, net):
    assert (fstype in netfs.NETWORK_FS) is net
