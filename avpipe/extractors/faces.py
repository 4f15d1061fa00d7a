"""The ``faces`` stage: MTCNN boxes, 5 landmarks and aligned crops, one row per video frame.

Detector: facenet-pytorch's MTCNN (P/R/O-net weights ship inside the wheel, so it works offline;
``weights_id`` is a checksum of ``pnet.pt``/``rnet.pt``/``onet.pt``).

Why not one MTCNN call per frame: the P-net image pyramid dominates the cost (BENCHMARKS.md,
"Where the faces time goes") while the face barely moves between frames. So, per video:

* **key frames** (every ``key_interval`` frames, and whenever no face is being tracked) get the
  full cascade, on a copy of the frame down-scaled so its longer side is at most
  ``detect_max_side`` (the minimum face size is scaled with it, never below P-net's 12 px);
* **frames in between** are *tracked*, by one of two trackers (below): O-net tracking (the
  default) or the window cascade (``track_onet_inputs = 0``);
* the kept face of a down-scaled key frame is re-detected by the window cascade at full
  resolution, so down-scaling costs no box or landmark precision.

**Window cascade** (``track_onet_inputs = 0``; the default until #24, its fingerprint unchanged, so
caches made then are found again): the full cascade runs at full resolution, but only in a window
of ``roi_scale`` × the previous face box around it, and only on the pyramid levels whose 12-px
P-net cell is ``roi_min_face``…``roi_max_face`` × the previous face size (3–4 levels instead of
~9); only that window of each level is resampled (same area bins as MTCNN's resize of the whole
frame) — the face goes through the same P/R/O-net steps as in a full-frame detection, the P-net
work is ~10× smaller, and the boxes are MTCNN's own. If no face overlapping the previous box
(IoU >= ``track_min_iou``) is found there, the track is dropped and the frame gets the full-frame
cascade at once.

**O-net tracking** (the default: 4 inputs, re-anchored every 4th tracked frame, odds-weighted
answers smoothed over ±2 frames): on a tracked frame O-net alone runs on the O-net inputs of the
last cascade that found this face (the square boxes R-net made for it, best
``track_onet_inputs`` first), each moved by the scale and shift that take that cascade's face box
to the previous frame's. That cascade is a window cascade, or the key frame's full cascade
(``track_onet_key_anchor``, on by default: the frame after a key frame needs no window cascade of
its own; a key frame detected down-scaled is anchored by its full-resolution window cascade). The window cascade runs instead (and becomes the new anchor) when O-net's
probability is below ``track_onet_min_prob``, when its face does not continue the track, and every
``track_onet_refresh``-th tracked frame (so the moved inputs stay fresh). Why each part:

* Feeding O-net its *inputs* rather than the previous *output* box: O-net's box is not a fixed
  point of O-net (re-regressing the previous box shrank it ~5 % and agreement with per-frame MTCNN
  fell to 60–80 %); with the inputs there is no drift or bias.
* Per-frame MTCNN keeps whichever candidate O-net scores highest, and those scores are all close
  to 1, so its box jumps between P-net's grid-bound proposals from frame to frame (its box against
  its own box on the next frame: IoU >= 0.9 on only 91–97 % of frames on the test clips). A tracker
  cannot repeat that draw, so it aims at its expectation: ``track_onet_temperature`` answers with
  the mean of O-net's candidates on the face weighted by their odds
  (:func:`avpipe.extractors.mtcnn.soft_answer`), and ``track_onet_smooth`` replaces each O-net
  answer by the mean of the track's answers within that many frames on each side (cascade frames
  keep the cascade's own answer; the stage hands rows on only once their neighbours are known).
  Per-frame MTCNN's own boxes smoothed so agree with it on 99.6–100 % of frames: what is left is
  the tracker's error, which averaging halves.

Measured (BENCHMARKS.md, "Faces at 10×: smoothed O-net tracking"): boxes within IoU 0.9 of
per-frame MTCNN's on ~98 % of frames (the window cascade: ~99.5 %; O-net tracking without the
refinements: 80–83 %), landmarks ~0.6 % of the face width from MTCNN's and no farther from the
true positions than MTCNN's own, at about twice the window cascade's speed. Each refinement, unset,
is absent from the fingerprint (as it was before it existed).

``key_interval=1, detect_max_side=None`` is the plain per-frame MTCNN.

Speed of the nets themselves, and what was measured and rejected: :mod:`avpipe.extractors.mtcnn`.

Frames are decoded by streaming (:func:`avpipe.extractors.media.iter_frames`). Memory is flat
in video length: rows and crops go to the shard a chunk of frames at a time (:meth:`Faces.stream`); person tracks keep small rows and landmarks, and their
crops are re-made from a second decode when they are written.
Rows follow *decode order = presentation order*; row ``i`` is the ``i``-th decoded frame. The row
count always equals the probe's ``n_frames``: if decoding yields fewer frames the missing tail is
masked (``attrs["decoded_frames"]`` says how many came out), extra decoded frames are dropped.

The parts live in their own modules: the cascade in :mod:`avpipe.extractors.mtcnn`, the
per-video tracking state in :mod:`avpipe.extractors.face_tracker`, the row columns in
:mod:`avpipe.extractors.face_columns`; this module is the stage.

Several faces: ``data``/``mask``/``crops`` are the main-face view, one track of the main face
(see :mod:`avpipe.extractors.tracking`), so single-person corpora and their readers see what they
always saw; the number of faces MTCNN found is recorded per row (on tracked frames: the count at
the last key frame). Every person also gets a track of their own (same detections; between key
frames each track follows its own window, a person lost for up to ``track_max_gap`` frames keeps
their identity), stored as extras with a leading track axis:

A person who appears (or comes back) between key frames is picked up at the next key frame;
a secondary person lost between key frames does not trigger a full cascade (the main face does).

* ``track_ids`` (T,), ``track_data`` (T, n, 17) rows as ``data``, ``track_mask`` (T, n);
* ``track_crops`` (T, n, S, S, 3) only when T >= 2 (with one person the track *is* the main view);
* attrs ``tracks`` (per track: frames covered, first/last row, mean box, median centre x, side)
  and ``sides`` (``{"left": id, "right": id}`` by :func:`avpipe.extractors.tracking.bind_sides`),
  which is how Aff-Wild2's ``X_left``/``X_right`` labels find their person.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from avpipe.extractors.alignment import TEMPLATES, align_face
from avpipe.extractors.face_columns import COLUMN_DOC, COLUMNS, column_doc
from avpipe.extractors.face_tracker import FaceTracker, PersonTrack
from avpipe.extractors.media import iter_frames
from avpipe.extractors.mtcnn import MtcnnEngine, mtcnn_weights_id
from avpipe.extractors.tracking import PERSON_TRACK_POLICY, SIDE_RULE, TRACK_POLICY
from avpipe.pipeline.config_schema import Float, Int, config_dataclass
from avpipe.pipeline.person_tracks import SIDES_ATTR, TRACK_CROPS, TRACKS_ATTR, person_attrs
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

__all__ = ["COLUMNS", "COLUMN_DOC", "Faces", "FacesConfig", "TRACK_CROP_BLOCK"]

# the O-net tracking options: keyed only while track_onet_inputs >= 1 (the last three only when set)
ONET_OPTIONS = ("track_onet_inputs", "track_onet_min_prob", "track_onet_refresh", "track_onet_temperature",
                "track_onet_smooth", "track_onet_key_anchor")

# frames of ``track_crops`` written per block (T x 64 x 112 x 112 x 3 = 2.4 MB per track); non-semantic
TRACK_CROP_BLOCK = 64


Template = Literal[tuple(TEMPLATES)]  # type: ignore[valid-type]  # the registered alignment templates
Probability = Annotated[Float, Field(ge=0.0, le=1.0)]


@config_dataclass
class FacesConfig:
    """Semantic options of the ``faces`` stage (all enter the fingerprint)."""

    crop_size: Annotated[Int, Field(ge=16, description="aligned crop side in pixels (112 ArcFace-style, "
                                                       "160 FaceNet-style)")] = 112
    template: Annotated[Template, Field(description="5-point alignment template (scaled by crop_size/112)")] = "arcface"
    min_face_size: Annotated[Int, Field(ge=1, description="smallest face searched, in original-frame pixels")] = 20
    thresholds: Annotated[tuple[Probability, Probability, Probability],
                          Field(description="P/R/O-net face probability thresholds (each in [0, 1])")] = (0.6, 0.7, 0.7)
    factor: Annotated[Float, Field(gt=0.0, lt=1.0, description="image-pyramid scale step")] = 0.709
    key_interval: Annotated[Int, Field(ge=1, description="full cascade every k frames; window-cascade tracking "
                                                         "between (1 = every frame)")] = 30
    detect_max_side: Annotated[Int | None, Field(ge=12, description="down-scale key frames to this longer side "
                                                                    "(unset = full resolution)")] = 640
    roi_scale: Annotated[Float, Field(ge=1.0, description="tracked frames: search window = roi_scale x the "
                                                          "previous face box")] = 2.0
    roi_min_face: Annotated[Float, Field(gt=0.0, description="tracked frames: pyramid levels for faces >= this x "
                                                             "the previous face")] = 0.5
    track_min_iou: Annotated[Probability, Field(description="continuity threshold (box IoU) of the track "
                                                            "policy")] = 0.3
    roi_max_face: Annotated[Float | None, Field(gt=0.0, description="tracked frames: only levels for faces <= "
                                                                    "this x the previous face (unset = no limit)")] = 2.0
    roi_rnet_top_k: Annotated[Int | None, Field(ge=1, description="tracked frames: best P-net proposals (after "
                                                                  "NMS) sent to R-net (unset = all)")] = None
    roi_onet_top_k: Annotated[Int | None, Field(ge=1, description="tracked frames: best R-net boxes (after NMS) "
                                                                  "sent to O-net (unset = all)")] = None
    track_max_gap: Annotated[Int, Field(ge=0, description="person tracks: a face lost at most this many frames "
                                                          "ago keeps its id")] = 75
    track_min_frames: Annotated[Int, Field(ge=1, description="person tracks: shorter tracks (spurious faces) are "
                                                             "not stored")] = 10
    max_tracks: Annotated[Int, Field(ge=1, description="person tracks: at most this many stored (longest "
                                                       "first)")] = 4
    track_onet_inputs: Annotated[Int, Field(ge=0, description="tracked frames: O-net alone on this many of the "
                                                              "last cascade's O-net inputs, moved with the face "
                                                              "(0 = window cascade on every tracked frame: "
                                                              "MTCNN's own boxes, about half as fast; the "
                                                              "track_onet_* options below are then ignored)")] = 4
    track_onet_min_prob: Annotated[Probability, Field(description="tracked frames: below this O-net probability "
                                                                  "the window cascade runs instead")] = 0.9
    track_onet_refresh: Annotated[Int | None, Field(ge=2, description="O-net tracking: every this many tracked "
                                                                     "frames the window cascade runs and re-anchors "
                                                                     "the track (unset = only when O-net fails)")] = 4
    track_onet_temperature: Annotated[Float | None, Field(gt=0.0, description="O-net tracking: the answer is the mean "
                                                                               "of O-net's boxes and landmarks on the "
                                                                               "face weighted by (p/(1-p))^(1/T) "
                                                                               "(unset = O-net's most probable box, as "
                                                                               "the cascade picks)")] = 3.0
    track_onet_smooth: Annotated[Int | None, Field(ge=1, description="O-net tracking: a frame O-net answered gets "
                                                                  "the mean box and landmarks of the track's "
                                                                  "answers within this many frames on each side "
                                                                  "(cascade frames stay the cascade's; unset = "
                                                                  "no smoothing)")] = 2
    track_onet_key_anchor: Annotated[bool, Field(description="O-net tracking: a key frame's full cascade (at full "
                                                            "resolution) anchors the track, so O-net answers the "
                                                            "next frame (false = the next frame runs the window "
                                                            "cascade for an anchor)")] = True

    @model_validator(mode="after")
    def _roi_range(self) -> "FacesConfig":
        if self.roi_max_face is not None and self.roi_max_face < self.roi_min_face:
            raise ValueError(f"roi_max_face ({self.roi_max_face}) must be >= roi_min_face ({self.roi_min_face})")
        return self


@register_stage
class Faces(Stage):
    name = "faces"
    # 2: window-only level resampling, roi_max_face, optimised nets; 3: key_interval 30;
    # 4: one track per person (extras track_*, attrs tracks/sides) beside the main-face rows
    version = "4"
    config_cls = FacesConfig
    requires = ("probe",)
    per_frame = True
    videos_per_task = 4
    description = ("MTCNN face box, 5 landmarks, probability and aligned crop per frame (main face; "
                   "every person's track as extras)")

    config: FacesConfig

    def __init__(self, config: FacesConfig | None = None, runtime: Any = None) -> None:
        super().__init__(config, runtime)
        self.engine: MtcnnEngine | None = None

    def semantic_config(self) -> dict[str, Any]:
        d = super().semantic_config()
        d["thresholds"] = [float(x) for x in d["thresholds"]]
        if not d["track_onet_inputs"]:  # O-net tracking off: the window cascade's output, version 4's key
            for name in ONET_OPTIONS:
                d.pop(name, None)
        for name in ONET_OPTIONS[2:]:  # unset: O-net tracking as before these options existed
            if d.get(name) in (None, False):
                d.pop(name, None)
        return d

    def weights_id(self) -> str | None:
        return mtcnn_weights_id()

    def load(self) -> None:
        self.engine = MtcnnEngine(self.config, self.runtime.resolve_device())

    # -- compute -------------------------------------------------------------------------------
    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        self.ensure_loaded()
        assert self.engine is not None
        probe = inputs["probe"]
        n = int(probe.attrs.get("n_frames", len(probe.data)))
        return self.stream(lambda: iter_frames(video.path), n)

    def process(self, frames: Iterator[np.ndarray], n: int) -> StageResult:
        """Detect/track over a frame iterator and build exactly ``n`` rows (see module doc), as
        whole arrays (tests, benchmarks: every track crop is kept, as the iterator is one-shot)."""
        from avpipe.pipeline.chunks import dense

        return dense(self.stream(lambda: frames, n, again=False))

    def stream(self, frames: Callable[[], Iterator[np.ndarray]], n: int, *, again: bool = True) -> StageResult:
        """The result with its per-frame columns (``data``, ``mask``, ``crops``) as a
        :class:`~avpipe.pipeline.chunks.RowChunks`: detection runs as the writer pulls the
        chunks, and each chunk is handed on once its frames are final. Person tracks are decided
        over the whole video, so their extras (and the counts in attrs) are filled in when the
        last chunk has been yielded; ``track_crops`` is a
        :class:`~avpipe.pipeline.chunks.BlockArray` that, with ``again``, decodes ``frames()`` a
        second time and re-aligns each kept track's crops from the landmarks it recorded
        (``align_face`` is deterministic: the same crops as the first pass made) — so no crop of
        a track has to wait in memory until the tracks are known."""
        from avpipe.pipeline.chunks import CHUNK_FRAMES, RowChunks

        self.ensure_loaded()
        S = self.config.crop_size
        attrs = self._attrs(n)
        extras: dict[str, Any] = {}

        def chunks() -> Iterator[dict[str, np.ndarray]]:
            assert self.engine is not None
            tr = FaceTracker(self.engine, self.config, n, keep_crops=not again)
            done = 0
            it = self._detect(tr, frames(), n)
            for final in it:
                while final - done >= CHUNK_FRAMES:
                    yield tr.take(done, done + CHUNK_FRAMES)
                    done += CHUNK_FRAMES
            while done < n:  # the rest, and rows beyond the decoded frames (masked zeros)
                stop = min(n, done + CHUNK_FRAMES)
                yield tr.take(done, stop)
                done = stop
            ex, summary, sides, kept = tr.person_tracks()
            if len(kept) >= 2:  # one person: its track is the main-face view, no second copy of the crops
                ex[TRACK_CROPS] = self._track_crops(tr, kept, frames if again else None)
            extras.clear()
            extras.update(ex)
            attrs.update(person_attrs(summary, sides))
            attrs.update({"decoded_frames": tr.decoded, "full_detections": tr.n_full,
                          "faces_found": tr.faces_found, "max_faces": tr.max_faces if n else 0})

        rows = RowChunks(n, (len(COLUMNS),), np.float32, chunks,
                         columns={"mask": ((), bool), "crops": ((S, S, 3), np.uint8)})
        return StageResult(data=rows, mask=None, extras=extras, attrs=attrs)

    def _track_crops(self, tr: FaceTracker, kept: list[PersonTrack],
                     frames: Callable[[], Iterator[np.ndarray]] | None) -> Any:
        """``track_crops`` (T, n, S, S, 3) written a block of frames at a time: from the frames
        decoded again (``frames``), or from the crops the tracker kept."""
        from avpipe.pipeline.chunks import BlockArray, chunk_ranges

        cfg, n, S = self.config, tr.n, self.config.crop_size
        T, decoded = len(kept), tr.decoded

        def blocks() -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
            it = iter(frames()) if frames is not None else None
            try:
                for a, b in chunk_ranges(n, TRACK_CROP_BLOCK):
                    blk = np.zeros((T, b - a, S, S, 3), np.uint8)
                    for i in range(a, b):
                        frame = next(it, None) if it is not None and i < decoded else None
                        if it is not None and i < decoded and frame is None:
                            raise StageError(f"the video decoded to {i} frames the second time, "
                                             f"{decoded} the first")
                        for r, t in enumerate(kept):
                            if i not in t.rows:
                                continue
                            if frame is None:
                                assert tr.kept is not None
                                blk[r, i - a] = tr.kept[(t.id, i)]
                            else:
                                blk[r, i - a] = align_face(frame, t.lms[i], S, cfg.template)
                    yield (slice(None), slice(a, b)), blk
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()

        return BlockArray((T, n, S, S, 3), np.uint8, blocks, row_axis=1)

    def _detect(self, tr: FaceTracker, frames: Iterator[np.ndarray], n: int) -> Iterator[int]:
        """Run detection/tracking over ``frames`` (at most ``n``); yields, as it goes, how many
        leading frames are final (their rows will not change); sets ``tr.decoded``."""
        eng, cfg = self.engine, self.config
        assert eng is not None
        pending_i: list[int] = []  # faceless stretch: frames batched for one full-cascade call
        pending_f: list[np.ndarray] = []
        decoded = 0
        shape: tuple[int, int] | None = None
        searching = False  # True while the last full cascade found no face

        def flush() -> None:
            nonlocal searching
            if pending_f:
                tr.full(list(pending_i), list(pending_f))
                pending_i.clear()
                pending_f.clear()
                searching = tr.main is None

        for frame in frames:
            if decoded >= n:
                break  # more decoded frames than the probe counted: drop the extras
            i = decoded
            decoded += 1
            tr.decoded = decoded
            tr.settle(i)  # tracks not seen on the last frame: their O-net frames are final
            wait = tr.unsettled()  # an O-net frame waiting for the answers of the next frames
            yield min(pending_i[0] if pending_i else i, i if wait is None else wait)  # all before are final
            if shape is None:
                shape = frame.shape[:2]
            elif frame.shape[:2] != shape:  # resolution change mid-stream: no mixed batches
                flush()
                shape = frame.shape[:2]
            if tr.main is None or tr.since_key + 1 >= cfg.key_interval:
                if tr.main is not None or not searching:  # key frame, or first frame: alone
                    flush()
                    tr.full([i], [frame])
                    searching = tr.main is None
                    continue
                # The last full cascade found no face: batch it over the next frames (up to a
                # key interval) — faceless stretches cost one batched call per k frames.
                pending_i.append(i)
                pending_f.append(frame)
                if len(pending_f) >= cfg.key_interval:
                    flush()
                continue
            if pending_f:  # cannot happen while tracking, kept for safety
                flush()
            if not tr.follow(i, frame):  # lost (occlusion, cut): the full cascade at once
                tr.full([i], [frame])
        flush()
        tr.settle()
        tr.decoded = decoded
        yield decoded

    def _attrs(self, n: int) -> dict[str, Any]:
        """The stage's attrs; what is known only at the end of the video (tracks, sides, counts)
        is filled in by :meth:`stream` after the last chunk (same keys, same order as ever)."""
        cfg, S = self.config, self.config.crop_size
        return {
            "columns": COLUMNS,
            "columns_doc": column_doc(bool(cfg.track_onet_inputs)),
            "crop_size": S,
            "template": cfg.template,
            "template_points": (TEMPLATES[cfg.template] * (S / 112.0)).round(4).tolist(),
            "alignment": "Umeyama similarity of the 5 MTCNN landmarks onto the template; "
                         "black outside the frame",
            "track_policy": TRACK_POLICY.format(min_iou=cfg.track_min_iou),
            "person_track_policy": PERSON_TRACK_POLICY.format(
                min_iou=cfg.track_min_iou, max_gap=cfg.track_max_gap, min_frames=cfg.track_min_frames,
                max_tracks=cfg.max_tracks),
            TRACKS_ATTR: [],
            SIDES_ATTR: {},
            "side_rule": SIDE_RULE,
            "row_policy": "row i = i-th decoded frame (presentation order); rows beyond the decoded "
                          "frames are masked; decoded frames beyond n_frames are dropped",
            "n_frames": n,
            "decoded_frames": 0,
            "full_detections": 0,
            "faces_found": 0,
            "max_faces": 0,
        }
