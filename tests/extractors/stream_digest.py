"""Digest of every stored entry of a cache: values of each dataset and the stage's attrs.

Why: the streaming ``faces``/``visual`` must store exactly what the whole-array code stored
(same values, shapes, dtypes, attrs); chunk layout and compression settings are not compared.
``python -m tests.extractors.stream_digest CACHE`` prints the digests as JSON.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

# provenance that may differ between code revisions without the entry changing
SKIP_ATTRS = {"avpipe_version", "packages_json"}


def entry_digest(group) -> str:
    """sha256 over the group's attrs (but SKIP_ATTRS) and every dataset's name, shape, dtype, bytes."""
    import h5py

    h = hashlib.sha256()
    for k in sorted(group.attrs):
        if k in SKIP_ATTRS:
            continue
        v = group.attrs[k]
        if k == "attrs_json":
            v = json.dumps(json.loads(v), sort_keys=True)
        h.update(f"{k}={v}\n".encode())
    names: list[str] = []
    group.visit(lambda n: names.append(n) if isinstance(group[n], h5py.Dataset) else None)
    for n in sorted(names):
        a = np.ascontiguousarray(group[n][()])
        h.update(f"{n} {a.shape} {a.dtype}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_digests(root: Path, stages: tuple[str, ...]) -> dict[str, str]:
    """``{"<stage>/<content_id>": digest}`` for every entry of ``stages`` in the cache's shards."""
    import h5py

    out: dict[str, str] = {}
    for shard in sorted(Path(root).rglob("*.h5")):
        with h5py.File(shard, "r") as f:
            for cid in f:
                st = str(f[cid].attrs.get("stage", ""))
                if st in stages:
                    out[f"{st}/{str(f[cid].attrs.get('fingerprint', ''))[:12]}/{cid}"] = entry_digest(f[cid])
    return out


if __name__ == "__main__":
    print(json.dumps(cache_digests(Path(sys.argv[1]), tuple(sys.argv[2].split(","))), indent=1, sort_keys=True))
