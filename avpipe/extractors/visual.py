"""The ``visual`` stage: one face embedding per video frame from the cached aligned crops.

Reads only the ``faces`` entry (its ``crops`` extra and mask), so changing the backbone reruns
this stage alone: the faces fingerprint does not depend on the backbone and its crops are
reused from the cache. Rows without a face are zeros with ``mask`` False.

``data`` embeds the main-face view (``faces`` ``crops``). When ``faces`` kept two or more person
tracks (extra ``track_crops``), each is embedded too: extras ``track_ids`` (T,), ``track_data``
(T, n, dim), ``track_mask`` (T, n); attrs ``tracks``/``sides`` are copied from ``faces`` so a
reader binds Aff-Wild2's ``_left``/``_right`` labels from this entry alone (an empty ``sides``
means no second person). The faces entry may come from MTCNN or from the organisers' crops
(``avpipe ingest-crops``): the shape is the same.

The backbone name is in the config and its weights checksum is ``weights_id``, so both enter
the fingerprint. Batch size and device come from :class:`Runtime` (not semantic).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from avpipe.extractors.backbones import Backbone, backbone_names, create_backbone
from avpipe.pipeline.config import config_dataclass, registry_choice
from avpipe.pipeline.stage import Stage, StageResult, VideoRef, register_stage


@config_dataclass
class VisualConfig:
    """Semantic options of ``visual``: which registered backbone embeds the crops."""

    backbone: Annotated[str, registry_choice(backbone_names, "backbone"),
                        Field(description="registered face-embedding backbone (a plugin may add more)")] = \
        "facenet-vggface2"


@register_stage
class Visual(Stage):
    name = "visual"
    version = "2"  # 2: per-person track embeddings (extras track_*), attrs tracks/sides
    config_cls = VisualConfig
    requires = ("faces",)
    per_frame = True
    videos_per_task = 8
    description = "face embedding per frame from the aligned crops (backbone by name)"

    config: VisualConfig

    def __init__(self, config: VisualConfig | None = None, runtime: Any = None) -> None:
        super().__init__(config, runtime)  # the backbone name was checked when the config was built
        self.backbone: Backbone = create_backbone(self.config.backbone)

    def weights_id(self) -> str | None:
        wid = self.backbone.weights_id(self.runtime.weights)
        return None if wid is None else f"{self.config.backbone}:{wid}"

    def load(self) -> None:
        import torch

        if self.runtime.resolve_device() == "cpu":
            torch.set_num_threads(max(1, int(self.runtime.num_threads)))
        self.backbone.load(self.runtime.resolve_device(), self.runtime.weights)

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        faces = inputs["faces"]
        mask = np.asarray(faces.mask, bool)
        res = self.embed(faces.extra("crops"), mask)
        fa = faces.attrs
        res.attrs["tracks"] = list(fa.get("tracks", []))
        res.attrs["sides"] = dict(fa.get("sides", {}))
        if "track_crops" in faces.extras:
            tcrops, tmask = faces.extra("track_crops"), np.asarray(faces.extra("track_mask"), bool)
            per = [self.embed(tcrops[t], tmask[t]).data for t in range(len(tmask))]
            res.extras = {"track_ids": np.asarray(faces.extra("track_ids"), np.int64),
                          "track_data": np.stack(per) if per else np.zeros((0, len(mask), self.backbone.dim),
                                                                           np.float32),
                          "track_mask": tmask.copy()}
        return res

    def embed(self, crops: np.ndarray, mask: np.ndarray) -> StageResult:
        """Embed the valid rows in batches of ``runtime.batch_size``; zeros where masked."""
        self.ensure_loaded()
        n = len(mask)
        out = np.zeros((n, self.backbone.dim), np.float32)
        idx = np.flatnonzero(mask)
        bs = max(1, int(self.runtime.batch_size))
        for s in range(0, len(idx), bs):
            rows = idx[s:s + bs]
            out[rows] = self.backbone.embed(np.asarray(crops[rows]))
        attrs = {"backbone": self.config.backbone, "dim": int(self.backbone.dim),
                 "backbone_description": self.backbone.description,
                 "input": "faces.crops (aligned, see faces attrs)", "masked_rows": "zeros"}
        return StageResult(data=out, mask=mask.copy(), attrs=attrs)
