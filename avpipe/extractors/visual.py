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

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from avpipe.extractors.backbones import Backbone, backbone_names, create_backbone
from avpipe.pipeline.config_schema import config_dataclass, registry_choice
from avpipe.pipeline.person_tracks import TRACK_CROPS, TRACK_IDS, TRACK_MASK, copied_person_attrs, track_extras
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
        self.backbone.load(self.runtime.resolve_device(), self.runtime.weights)

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        """Rows as a :class:`~avpipe.pipeline.chunks.RowChunks` (``data`` + ``mask``), person
        tracks' rows as a :class:`~avpipe.pipeline.chunks.BlockArray`: crops are read from the
        faces entry a frame range at a time, so memory does not grow with the video."""
        from avpipe.pipeline.chunks import BlockArray, RowChunks

        faces = inputs["faces"]
        mask = np.asarray(faces.mask, bool)
        n, dim = len(mask), int(self.backbone.dim)
        main = _Crops(faces, "crops", ())
        rows = RowChunks(n, (dim,), np.float32,
                         lambda: ({"data": c["data"], "mask": c["mask"]} for c in self._chunks(main, mask)),
                         columns={"mask": ((), bool)})
        attrs = self._attrs()
        attrs.update(copied_person_attrs(faces.attrs))
        extras: dict[str, Any] = {}
        if TRACK_CROPS in faces.extras:
            tmask = np.asarray(faces.extra(TRACK_MASK), bool)

            def blocks() -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
                for t in range(len(tmask)):
                    for c in self._chunks(_Crops(faces, TRACK_CROPS, (t,)), tmask[t]):
                        yield (t, slice(c["start"], c["start"] + len(c["data"]))), c["data"]

            extras = track_extras(faces.extra(TRACK_IDS),
                                  BlockArray((len(tmask), n, dim), np.float32, blocks, row_axis=1), tmask)
        return StageResult(data=rows, mask=None, extras=extras, attrs=attrs)

    def embed(self, crops: np.ndarray, mask: np.ndarray) -> StageResult:
        """Embed the valid rows of in-memory ``crops`` (whole arrays; tests, in-process callers)."""
        mask = np.asarray(mask, bool)
        rows = [c["data"] for c in self._chunks(lambda a, b: crops[a:b], mask)]
        data = np.concatenate(rows) if rows else np.zeros((0, int(self.backbone.dim)), np.float32)
        return StageResult(data=data, mask=mask.copy(), attrs=self._attrs())

    def _attrs(self) -> dict[str, Any]:
        return {"backbone": self.config.backbone, "dim": int(self.backbone.dim),
                "backbone_description": self.backbone.description,
                "input": "faces.crops (aligned, see faces attrs)", "masked_rows": "zeros"}

    def _chunks(self, read: Callable[[int, int], np.ndarray], mask: np.ndarray) -> Iterator[dict[str, Any]]:
        """``{"data", "mask", "start"}`` for consecutive frame ranges covering ``mask`` (about
        CHUNK_FRAMES rows each): zeros where masked, the backbone's embedding where valid.

        The valid rows go to the backbone in exactly the batches a whole-array pass makes
        (``batch_size`` consecutive valid rows, wherever they fall in frames), so the rows do not
        depend on how the video is cut into chunks, whatever the backbone's batch arithmetic.
        ``read(a, b)`` gives the crops of frames ``a:b``; they are read a window at a time."""
        from avpipe.pipeline.chunks import CHUNK_FRAMES

        self.ensure_loaded()
        n, dim = len(mask), int(self.backbone.dim)
        idx = np.flatnonzero(mask)
        bs = max(1, int(self.runtime.batch_size))
        window = max(CHUNK_FRAMES, int(getattr(read, "window", 0)))
        win: tuple[int, int, np.ndarray] | None = None
        out: list[np.ndarray] = []  # rows [done, done + held) waiting to be yielded
        done = held = 0

        def gather(rows: np.ndarray) -> np.ndarray:
            nonlocal win
            parts, j = [], 0
            while j < len(rows):
                if win is None or not win[0] <= rows[j] < win[1]:
                    a = int(rows[j])
                    b = min(n, a + window)
                    win = (a, b, np.asarray(read(a, b)))
                k = int(np.searchsorted(rows, win[1]))
                parts.append(win[2][rows[j:k] - win[0]])
                j = k
            return np.concatenate(parts)

        def put(stop: int, rows: np.ndarray, emb: np.ndarray) -> Iterator[dict[str, Any]]:
            """Rows up to frame ``stop`` (``rows`` valid, embedded as ``emb``), in chunks."""
            nonlocal done, held
            at = done + held
            while at < stop:
                b = min(stop, at + CHUNK_FRAMES)
                blk = np.zeros((b - at, dim), np.float32)
                sel = (rows >= at) & (rows < b)
                blk[rows[sel] - at] = emb[sel]
                out.append(blk)
                held += b - at
                at = b
                while held >= CHUNK_FRAMES or (held and at == n and at == stop):
                    rows_out = np.concatenate(out)
                    k = min(held, CHUNK_FRAMES)
                    rest = rows_out[k:]
                    yield {"data": rows_out[:k], "mask": mask[done:done + k].copy(), "start": done}
                    out.clear()
                    if len(rest):
                        out.append(rest)
                    done, held = done + k, held - k

        for s in range(0, len(idx), bs):
            rows = idx[s:s + bs]
            emb = np.asarray(self.backbone.embed(gather(rows)), np.float32)
            yield from put(int(rows[-1]) + 1, rows, emb)
        yield from put(n, idx[:0], np.zeros((0, dim), np.float32))


class _Crops:
    """``read(a, b)`` over frames of a faces entry's crops extra (under leading index ``lead``).
    ``window``: frames per read — at least one stored chunk along the frame axis, so that crops
    stored by older code (one chunk per track) are not decompressed once per range."""

    def __init__(self, faces: Any, name: str, lead: tuple[int, ...]) -> None:
        self.faces, self.name, self.lead = faces, name, lead
        chunks = faces.extra_chunks(name) if hasattr(faces, "extra_chunks") else None
        self.window = int(chunks[len(lead)]) if chunks else 0

    def __call__(self, a: int, b: int) -> np.ndarray:
        return self.faces.extra_rows(self.name, a, b, self.lead)
