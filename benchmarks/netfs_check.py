"""Manual check: one avpipe cache on a network filesystem (NFS, sshfs, CIFS ...), reached through
one or two mount points of the same export. Not a test: it needs a mount that CI does not have.

    python benchmarks/netfs_check.py /mnt/nfs-a/avpipe-check [/mnt/nfs-b/avpipe-check]

The folder (created, and left for inspection) must be on the network filesystem; the optional
second path is the same folder through another mount (a second client mount of the same export, or
another machine's path if you run the second half there by hand). It checks what docs/scale.md
promises: avpipe detects the network filesystem and puts the index in rollback-journal mode; two
extractions started at once (one per path) serialise on the cache lock and compute every video once;
``cache verify`` passes; ``status`` through the second path writes nothing. Prints one line per
check and exits 1 if any fails. Needs only the CPU stages (probe, audio, logmel), no weights.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avpipe.pipeline.netfs import filesystem_type, index_journal_mode  # noqa: E402
from tests.media import make_clip  # noqa: E402

STAGES = "probe,audio,logmel"


def _avpipe(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "avpipe", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes()).hexdigest() + f":{p.stat().st_mtime_ns}"
            for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__)
        return 2
    one, two = Path(argv[0]).absolute(), Path(argv[-1]).absolute()
    one.mkdir(parents=True, exist_ok=True)
    ok = True

    def check(what: str, cond: bool, detail: str = "") -> None:
        nonlocal ok
        ok &= cond
        print(f"{'ok  ' if cond else 'FAIL'} {what}" + (f" ({detail})" if detail else ""), flush=True)

    fstype = filesystem_type(one)
    check("filesystem type read from mountinfo", fstype is not None, f"{fstype}")
    check("index journal chosen for it is DELETE (rollback journal)", index_journal_mode(one) == "DELETE",
          index_journal_mode(one))
    videos = Path(tempfile.mkdtemp(prefix="avpipe-netfs-videos-"))  # local: only the cache is shared
    for i in range(6):
        make_clip(videos / f"v{i}.mp4", seed=100 + i, audio=True, seconds=3.0)
    cache1, cache2 = one / "cache", two / "cache"
    t0 = time.monotonic()
    first = _avpipe("extract", "--videos", str(videos), "--cache", str(cache1), "--stages", STAGES, "--no-progress")
    time.sleep(1.0)
    second = _avpipe("extract", "--videos", str(videos), "--cache", str(cache2), "--stages", STAGES, "--no-progress")
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    both = first.returncode == second.returncode == 0
    check("both extractions exit 0", both, "" if both else f"{first.returncode}/{second.returncode} "
                                                          f"{err1.strip()[-300:]} {err2.strip()[-300:]}")
    check("the second waited on the lock, which names host and pid", "is locked by pid" in err2 and " on " in err2,
          err2.splitlines()[0] if err2 else "no message")
    rows = {ln.split()[0]: ln.split()[1:3] for ln in out2.splitlines() if ln.split()[:1] and ln.split()[0] in
            STAGES.split(",")}
    check("the second found every video cached by the first (computed 0)",
          len(rows) == 3 and all(r == ["6", "0"] for r in rows.values()), str(rows))
    print(f"     both runs: {time.monotonic() - t0:.1f} s")
    db = sqlite3.connect(f"file:{cache1 / 'index.sqlite'}?mode=ro", uri=True)
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    check("index.sqlite is in rollback-journal mode", mode.lower() == "delete", mode)
    ver = _avpipe("cache", "verify", "--cache", str(cache2))
    vout, verr = ver.communicate(timeout=600)
    check("cache verify through the second path", ver.returncode == 0, (vout + verr).strip()[-300:])
    before = _tree(cache1)
    st = _avpipe("status", "--cache", str(cache2), "--videos", str(videos), "--stages", STAGES)
    sout, serr = st.communicate(timeout=600)
    check("status through the second path exits 0", st.returncode == 0, serr.strip()[-300:])
    check("status wrote nothing", _tree(cache1) == before)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
