"""Precomputed features (crop trees, synthetic caches, other labs' embeddings): their fingerprints
are pinned, and their entries carry the same provenance attrs as extracted ones."""
from __future__ import annotations

import json

import h5py
import numpy as np

import avpipe
from avpipe.pipeline.fingerprint import precomputed_fingerprint
from avpipe.pipeline.ingest import write_precomputed
from avpipe.pipeline.store import Cache
from avpipe.pipeline.types import StageResult

#: Fingerprints of precomputed entries as stored in caches today; a change here orphans every
#: crop-tree ingest and synthetic cache (values computed before the recipe moved to fingerprint.py).
PINNED = [
    (("faces", {"source": "cropped_aligned", "crop_size": 112, "probe": "a" * 64, "content": "c" * 64},
      "crops-1"), "f77a990b1215a848dbcd1c2a5eeda7e7903e6f4130e7a3be18a7b9abff77f0d2"),
    (("faces", {"source": "cropped_aligned", "crop_size": None, "probe": "a" * 64, "content": "c" * 64},
      "crops-1"), "9ea6c6ac0ede5e49c3a965506a4c50ab7c1d051a34a479aad990c4f21438f5bf"),
    (("visual", {"t": 1}, "precomputed"), "90ee0d32794fa857010384086a5153d7d56398e48e50b62818aff2a2340bf983"),
]


def test_precomputed_fingerprints_are_pinned():
    for (stage, config, version), want in PINNED:
        assert precomputed_fingerprint(stage, config, version) == want


def test_an_ingested_entry_has_the_provenance_of_an_extracted_one(tmp_path):
    cid = "d" * 40
    res = StageResult(np.ones((3, 2), np.float32))
    fp = write_precomputed(tmp_path / "cache", "visual", None, {cid: res}, {cid: "a.mp4"}, {"t": 1},
                           upstream={"probe": "p" * 64})
    assert fp == PINNED[2][1]
    with Cache(tmp_path / "cache") as c:
        e = c.read("visual", "a.mp4", fingerprint=fp)
        with h5py.File(e.shard, "r") as h5:
            attrs = dict(h5[cid].attrs)
    assert json.loads(attrs.pop("packages_json"))  # the numerics packages that "computed" it
    assert attrs == {"stage": "visual", "version": "precomputed", "fingerprint": fp, "config_json": '{"t":1}',
                     "weights_id": "", "upstream_json": json.dumps({"probe": "p" * 64}, sort_keys=True),
                     "avpipe_version": avpipe.__version__, "attrs_json": "{}", "content_id": cid}
