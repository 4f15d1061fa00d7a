"""The ``visual_clip`` stage: a 3D CNN over a window of face crops, one row per video frame.

Why a separate stage: JCA and RJA read faces as short clips (8 frames; JCA samples every 4th of
32), not frame by frame. The row of frame t is the clip backbone's output on the crops of frames
``t − (clip_frames − 1)·frame_step, …, t − frame_step, t`` (``anchor = "causal"``: the clip
*ends* at t, as in both papers, whose label per clip is its last frame's) or centred on t
(``centered``). Indices before the first frame or after the last are clamped to the video (the
nearest frame repeats, as RJA's loader repeats an index). A frame without a face contributes a
black crop (the organisers' convention for missing faces); a row is valid when frame t has a face
and at least ``min_faces`` of the clip's frames do.

``output = "pooled"``: the backbone's map averaged over time and space (R(2+1)D-18 512-d, I3D
1024-d); ``"map"``: the map flattened (R(2+1)D-18 on 8 frames: 512·1·7·7 = 25 088, RJA's
"average pool removed"). Backbones: :mod:`avpipe.extractors.backbones.clips`.

Clips are built a range of frames at a time (crops read from the faces entry once per range) and
embedded ``batch_size`` clips per forward pass; batch size and device are runtime settings.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from avpipe.extractors.backbones.clips import ClipBackbone, clip_backbone_names, create_clip_backbone
from avpipe.pipeline.chunks import CHUNK_FRAMES, RowChunks
from avpipe.pipeline.config_schema import Int, config_dataclass, registry_choice
from avpipe.pipeline.stage import Stage, StageResult, VideoRef, register_stage


@config_dataclass
class VisualClipConfig:
    """Semantic options of ``visual_clip``: the clip backbone, the clip's frames, the row's content."""

    backbone: Annotated[str, registry_choice(clip_backbone_names, "clip backbone"),
                        Field(description="registered clip backbone")] = "r2plus1d-18-kinetics400"
    clip_frames: Annotated[Int, Field(ge=1, le=64, description="frames per clip (RJA and JCA: 8)")] = 8
    frame_step: Annotated[Int, Field(ge=1, le=16, description="take every n-th frame (JCA: 4, i.e. 8 of 32)")] = 1
    anchor: Annotated[Literal["causal", "centered"], Field(description="clip ends at the frame (causal) or is "
                                                                       "centred on it")] = "causal"
    output: Annotated[Literal["pooled", "map"], Field(description="pooled vector, or the final spatial map "
                                                                  "flattened")] = "pooled"
    min_faces: Annotated[Int, Field(ge=1, description="frames of the clip that must have a face for a valid "
                                                      "row")] = 1


def clip_indices(n: int, clip_frames: int, step: int, anchor: str) -> np.ndarray:
    """(n, clip_frames) frame indices of each row's clip, clamped to [0, n)."""
    offs = -np.arange(clip_frames - 1, -1, -1) * step
    if anchor == "centered":
        offs = offs + ((clip_frames - 1) * step) // 2
    return np.clip(np.arange(n)[:, None] + offs[None, :], 0, max(n - 1, 0))


@register_stage
class VisualClip(Stage):
    name = "visual_clip"
    version = "1"
    config_cls = VisualClipConfig
    requires = ("faces",)
    per_frame = True
    videos_per_task = 4
    opt_in = True  # a 3D CNN per frame (and a model download): only when asked for
    description = "3D-CNN clip embedding per frame (R(2+1)D-18 / I3D over the last clip_frames face crops)"

    config: VisualClipConfig

    def __init__(self, config: VisualClipConfig | None = None, runtime: Any = None) -> None:
        super().__init__(config, runtime)
        self.backbone: ClipBackbone = create_clip_backbone(self.config.backbone)

    def weights_id(self) -> str | None:
        return f"{self.config.backbone}:{self.backbone.weights_id(self.runtime.weights)}"

    def load(self) -> None:
        self.backbone.load(self.runtime.resolve_device(), self.runtime.weights)

    def dim(self) -> int:
        return self.backbone.dim(self.config.output, self.config.clip_frames)

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        faces = inputs["faces"]
        fmask = np.asarray(faces.mask, bool)

        def read(a: int, b: int) -> np.ndarray:
            return np.asarray(faces.extra_rows("crops", a, b) if hasattr(faces, "extra_rows")
                              else faces.extra("crops")[a:b])
        return self.rows(read, fmask)

    def rows(self, read: Any, fmask: np.ndarray) -> StageResult:
        """Rows from ``read(a, b)`` (crops of frames a:b) and the faces mask."""
        cfg = self.config
        n, dim = len(fmask), self.dim()
        idx = clip_indices(n, cfg.clip_frames, cfg.frame_step, cfg.anchor)
        mask = fmask.copy()
        if n:
            mask &= fmask[idx].sum(axis=1) >= min(cfg.min_faces, cfg.clip_frames)
        bs = max(1, int(self.runtime.batch_size))

        def gen() -> Any:
            self.ensure_loaded()
            for a in range(0, n, CHUNK_FRAMES):
                b = min(n, a + CHUNK_FRAMES)
                lo, hi = int(idx[a:b].min()), int(idx[a:b].max()) + 1
                crops = np.asarray(read(lo, hi)).copy()
                crops[~fmask[lo:hi]] = 0  # no face: a black crop
                out = np.zeros((b - a, dim), np.float32)
                rows = np.flatnonzero(mask[a:b])
                for s in range(0, len(rows), bs):
                    r = rows[s:s + bs]
                    clips = crops[idx[a + r] - lo]  # (k, T, S, S, 3)
                    out[r] = self.backbone.embed(clips, cfg.output)
                yield out

        attrs = {"backbone": cfg.backbone, "dim": dim, "output": cfg.output, "clip_frames": cfg.clip_frames,
                 "frame_step": cfg.frame_step, "anchor": cfg.anchor,
                 "clip": ("frames t-(clip_frames-1)*frame_step .. t" if cfg.anchor == "causal"
                          else "centred on t"), "backbone_description": self.backbone.description,
                 "masked_rows": "zeros", "missing_face": "black crop"}
        return StageResult(data=RowChunks(n, (dim,), np.float32, gen), mask=mask, attrs=attrs)
