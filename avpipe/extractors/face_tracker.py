"""The ``faces`` stage's per-video state: every person's track plus the main-face view.

Which face is kept and how detections become identities is the pure geometry of
:mod:`avpipe.extractors.tracking`; this module holds the state that applies it frame by frame, and
decides, per tracked frame, between the window cascade and O-net alone (:mod:`avpipe.extractors.mtcnn`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from avpipe.extractors.alignment import align_face
from avpipe.extractors.face_columns import BOX, DETECTED, LANDMARKS, N_COLUMNS, N_FACES, PROB
from avpipe.extractors.mtcnn import Cascade, MtcnnEngine, move_inputs, onet_anchor, soft_answer
from avpipe.extractors.tracking import bind_sides, choose_face, iou, match_tracks, reidentify
from avpipe.pipeline.person_tracks import track_extras

if TYPE_CHECKING:
    from avpipe.extractors.faces import FacesConfig


@dataclass
class PersonTrack:
    """One person's track while a video is processed."""

    id: int
    box: np.ndarray  # box on the last frame it was seen
    last: int  # that frame's index
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> data row (len(COLUMNS),)
    lms: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (5, 2) float64 landmarks of the crop
    # last cascade that found this face: its box there and the O-net inputs that produced it
    anchor: tuple[np.ndarray, np.ndarray] | None = None
    onet_run: int = 0  # frames answered by O-net alone since the anchor was set
    # O-net smoothing (``track_onet_smooth``): the raw answers (box + landmarks, (14,)) of the
    # current run of consecutive frames, its first frame, and its O-net frames not yet final
    raw: dict[int, np.ndarray] = field(default_factory=dict)
    run_start: int = 0
    pending: list[int] = field(default_factory=list)


class FaceTracker:
    """Per-video state of the ``faces`` stage: every person's track plus the main-face view.

    The main-face rows (``data``/``mask``/``crops``) follow the policy of
    :mod:`avpipe.extractors.tracking` exactly as a single-track stage would; every face found is
    also kept in its person track (:data:`~avpipe.extractors.tracking.PERSON_TRACK_POLICY`).

    Memory: main-face rows wait here only until :meth:`take` hands them on (a chunk of frames at a
    time); person tracks keep their small rows and landmarks, not their crops — those are made
    again from the landmarks when the track crops are written
    (:meth:`avpipe.extractors.faces.Faces.stream`), unless ``keep_crops`` (a one-shot frame
    iterator cannot be decoded twice): then every track crop is kept (tests, benchmarks on short
    clips).
    """

    def __init__(self, engine: MtcnnEngine, config: FacesConfig, n: int, keep_crops: bool = False) -> None:
        self.eng, self.cfg, self.n = engine, config, n
        self.rows: dict[int, np.ndarray] = {}  # frame -> main-face view row, until taken
        self.crops: dict[int, np.ndarray] = {}  # frame -> main-face crop (its row is valid), until taken
        self.kept: dict[tuple[int, int], np.ndarray] | None = {} if keep_crops else None  # (track, row) -> crop
        self.faces_found = 0
        self.max_faces = 0
        self.tracks: dict[int, PersonTrack] = {}
        self.active: list[int] = []  # tracks followed from the previous frame, main first
        self.main: int | None = None
        self.last_count = 0
        self.since_key = 0
        self.n_full = 0
        self.decoded = 0  # frames decoded so far (set by Faces._detect)
        # O-net smoothing: radius in frames (0 = off) and the frames O-net answers still wait on
        self.smooth = int(config.track_onet_smooth or 0) if config.track_onet_inputs else 0
        self.frames: dict[int, np.ndarray] = {}

    @property
    def main_box(self) -> np.ndarray | None:
        return None if self.main is None else self.tracks[self.main].box

    # -- recording ---------------------------------------------------------------------------
    def _record(self, i: int, frame: np.ndarray, tid: int, box: np.ndarray, lm: np.ndarray,
                prob: float, count: int, detected: bool, onet: bool = False) -> None:
        row = np.zeros(N_COLUMNS, np.float32)
        row[BOX], row[LANDMARKS], row[PROB], row[N_FACES], row[DETECTED] = box[:4], lm.reshape(-1), prob, count, detected
        lm = np.array(lm, np.float64).reshape(5, 2)
        t = self.tracks[tid]
        if tid == self.main:
            self.rows[i] = row
        if self.smooth:
            if t.raw and t.last != i - 1:  # the run before a gap ends: its O-net frames are final
                self._settle(t, final=True)
                t.raw.clear()
            if not t.raw:
                t.run_start = i
            t.raw[i] = np.concatenate([np.asarray(box[:4], np.float64), lm.reshape(-1)])
        t.rows[i], t.lms[i], t.box, t.last = row, lm, np.asarray(box[:4], np.float64), i
        if self.smooth and onet:  # its crop waits for the answers of the next frames
            t.pending.append(i)
            self.frames[i] = frame
        else:
            self._crop(i, frame, t, lm)
        if self.smooth:
            self._settle(t, final=False)
            for old in [k for k in t.raw if k < i - 2 * self.smooth]:
                del t.raw[old]

    def _crop(self, i: int, frame: np.ndarray, t: PersonTrack, lm: np.ndarray) -> None:
        crop = align_face(frame, lm, self.cfg.crop_size, self.cfg.template)
        if self.rows.get(i) is t.rows[i]:  # main face on that frame
            self.crops[i] = crop
        if self.kept is not None:
            self.kept[(t.id, i)] = crop

    # -- O-net smoothing -----------------------------------------------------------------------
    def _settle(self, t: PersonTrack, final: bool) -> None:
        """Make final the O-net frames of ``t`` whose smoothing window is complete (all of them
        when ``final``: the run has ended). An O-net frame's box and landmarks become the mean of
        the run's raw answers over the frames within ``smooth`` of it on both sides, as many on
        each side (fewer near the run's ends), window-cascade frames included; its crop is made
        from the smoothed landmarks."""
        r, done = self.smooth, False
        while t.pending and (final or t.pending[0] + r <= t.last):
            i = t.pending.pop(0)
            k = min(r, i - t.run_start, t.last - i)
            v = np.mean([t.raw[j] for j in range(i - k, i + k + 1)], axis=0)
            row = t.rows[i]
            row[BOX], row[LANDMARKS] = v[:4], v[4:]
            t.lms[i] = v[4:].reshape(5, 2)
            self._crop(i, self.frames[i], t, t.lms[i])
            done = True
        if done:  # drop the frames no track waits on any more
            waiting = {j for tr in self.tracks.values() for j in tr.pending}
            for j in [j for j in self.frames if j not in waiting]:
                del self.frames[j]

    def unsettled(self) -> int | None:
        """The first frame whose rows may still change (an O-net frame waiting for smoothing)."""
        firsts = [t.pending[0] for t in self.tracks.values() if t.pending]
        return min(firsts) if firsts else None

    def settle(self, i: int | None = None) -> None:
        """End the runs of the tracks not seen on frame ``i - 1`` (all, when ``i`` is None: the
        video has ended), making their O-net frames final."""
        for t in self.tracks.values():
            if t.pending and (i is None or t.last < i - 1):
                self._settle(t, final=True)

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The main-face columns of rows ``start:stop`` (all final), released from the tracker."""
        S = self.cfg.crop_size
        data = np.zeros((stop - start, N_COLUMNS), np.float32)
        mask = np.zeros(stop - start, bool)
        crops = np.zeros((stop - start, S, S, 3), np.uint8)
        for i in range(start, stop):
            row = self.rows.pop(i, None)
            if row is not None:
                data[i - start] = row
            crop = self.crops.pop(i, None)
            if crop is not None:
                mask[i - start], crops[i - start] = True, crop
        self.faces_found += int(mask.sum())
        if len(data):
            self.max_faces = max(self.max_faces, int(data[:, N_FACES].max()))
        return {"data": data, "mask": mask, "crops": crops}

    # -- full cascade ------------------------------------------------------------------------
    def full(self, idx: list[int], frames: list[np.ndarray]) -> None:
        """Full cascade on a batch of same-size frames, then :meth:`_key_frame` on each (one
        frame: the engine's own cascade, which keeps O-net's inputs; a batch: one batched call)."""
        self.n_full += len(frames)
        if len(frames) == 1:
            c = self.eng.detect_one(frames[0])
            self._key_frame(idx[0], frames[0], c.boxes[c.picks], c.points[c.picks], c)
            return
        for i, frame, (b, p) in zip(idx, frames, self.eng.detect(frames)):
            self._key_frame(i, frame, b, p)

    def _identities(self, i: int, boxes: np.ndarray) -> list[int]:
        """A track id per detection: continuity, else a recently lost identity, else a new one."""
        cfg = self.cfg
        matched = match_tracks(np.array([self.tracks[t].box for t in self.active]).reshape(-1, 4),
                               boxes, cfg.track_min_iou)
        ids: list[int | None] = [self.active[matched[d]] if d in matched else None
                                 for d in range(len(boxes))]
        for d in range(len(boxes)):
            if ids[d] is not None:
                continue
            lost = [(t.id, t.box, t.last) for t in self.tracks.values() if t.id not in ids]
            rid = reidentify(boxes[d], lost, i, cfg.track_max_gap)
            if rid is None:
                rid = len(self.tracks)
                self.tracks[rid] = PersonTrack(rid, np.asarray(boxes[d], np.float64), i)
            ids[d] = rid
        return [int(x) for x in ids]  # type: ignore[arg-type]

    def _key_frame(self, i: int, frame: np.ndarray, b: np.ndarray, p: np.ndarray,
                   cascade: Cascade | None = None) -> None:
        """Record a full cascade's faces ``b``/``p`` (MTCNN's answer, best first) on frame ``i``.
        With ``track_onet_key_anchor`` and the ``cascade`` they came from (found at full
        resolution), each face's O-net inputs there anchor its track, so O-net tracking answers
        the next frame; otherwise that frame runs the window cascade to get an anchor."""
        H, W = frame.shape[:2]
        self.last_count, self.since_key = len(b), 0
        if len(b) == 0:
            row = np.zeros(N_COLUMNS, np.float32)
            row[N_FACES], row[DETECTED] = 0, 1
            self.rows[i] = row
            self.active, self.main = [], None
            return
        j = choose_face(b[:, :4], self.main_box, W, H, self.cfg.track_min_iou)
        ids = self._identities(i, b[:, :4])
        self.main = ids[j]
        order = [j] + [k for k in range(len(b)) if k != j]
        self.active = [ids[k] for k in order]
        refine = self.eng.scale_for(frame) != 1.0
        anchor = cascade is not None and not refine and bool(self.cfg.track_onet_key_anchor)
        for k in order:
            box, lm, prob = b[k, :4], p[k], float(b[k, 4])
            t = self.tracks[ids[k]]
            t.anchor, t.onet_run = None, 0
            if anchor:
                assert cascade is not None
                t.anchor = onet_anchor(cascade, int(cascade.picks[k]), self.cfg.track_onet_inputs)
            if refine:  # found on a down-scaled copy: redo at full resolution
                got = self._window(frame, ids[k], box, 0.0)
                if got is not None:
                    box, lm, prob, _ = got
            self._record(i, frame, ids[k], box, lm, prob, len(b), True)

    # -- one face on one frame -----------------------------------------------------------------
    def _window(self, frame: np.ndarray, tid: int, box: np.ndarray,
                min_iou: float) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """Window cascade around ``box``: the found face overlapping it most (box, landmarks,
        prob, IoU), if that IoU >= ``min_iou``; the track's O-net anchor is set from it."""
        c = self.eng.roi_cascade(frame, box)
        if not len(c.picks):
            return None
        ov = iou(box, c.boxes[c.picks, :4])
        m = int(np.argmax(ov))
        if ov[m] < min_iou:
            return None
        k = int(c.picks[m])
        self.tracks[tid].anchor = onet_anchor(c, k, self.cfg.track_onet_inputs)
        self.tracks[tid].onet_run = 0
        return c.boxes[k, :4], c.points[k], float(c.boxes[k, 4]), float(ov[m])

    def _onet(self, frame: np.ndarray, tid: int) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """O-net alone on the track's anchor inputs, moved with the face (see :meth:`follow`);
        None when it has no anchor or O-net is unsure (prob < ``track_onet_min_prob``) or the
        face it returns does not continue the track."""
        t, cfg = self.tracks[tid], self.cfg
        if t.anchor is None or not cfg.track_onet_inputs:
            return None
        if cfg.track_onet_refresh and t.onet_run + 1 >= cfg.track_onet_refresh:
            return None  # time to re-anchor: the window cascade answers this frame
        a_box, a_inputs = t.anchor
        c = self.eng.onet_track(frame, move_inputs(a_inputs, a_box, t.box))
        if not len(c.picks):
            return None
        ov = iou(t.box, c.boxes[c.picks, :4])
        m = int(np.argmax(ov))
        k = int(c.picks[m])
        if ov[m] < cfg.track_min_iou or c.boxes[k, 4] < cfg.track_onet_min_prob:
            return None
        t.onet_run += 1
        if cfg.track_onet_temperature is not None:
            box, lm = soft_answer(c, k, cfg.track_onet_temperature)
            return box, lm, float(c.boxes[k, 4]), float(iou(t.box, box[None])[0])
        return c.boxes[k, :4], c.points[k], float(c.boxes[k, 4]), float(ov[m])

    # -- tracked frames ----------------------------------------------------------------------
    def follow(self, i: int, frame: np.ndarray) -> bool:
        """Window cascade around every active track's box. False (nothing recorded) when the
        main face is lost: the caller then runs the full cascade on this frame."""
        cfg = self.cfg
        found: dict[int, tuple[np.ndarray, np.ndarray, float, float]] = {}
        by_onet: set[int] = set()
        for tid in self.active:
            got = self._onet(frame, tid)
            if got is not None:
                by_onet.add(tid)
            else:
                got = self._window(frame, tid, self.tracks[tid].box, cfg.track_min_iou)
            if got is not None:
                found[tid] = got
        # two tracks landed on one face (people crossing): the better-overlapping one keeps it
        for a in list(found):
            for c in list(found):
                if a < c and a in found and c in found and iou(found[a][0], found[c][0]) >= 0.5:
                    del found[a if found[a][3] < found[c][3] else c]
        if self.main not in found:
            self.main = None
            return False
        self.since_key += 1
        self.active = [t for t in self.active if t in found]
        for tid in self.active:
            box, lm, prob, _ = found[tid]
            self._record(i, frame, tid, box, lm, prob, max(self.last_count, 1), False, tid in by_onet)
        return True

    # -- result ------------------------------------------------------------------------------
    def person_tracks(self) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], dict[str, int], list[PersonTrack]]:
        """(extras but ``track_crops``, per-track summary, sides, the tracks kept) (see
        PERSON_TRACK_POLICY)."""
        cfg, n = self.cfg, self.n
        kept = sorted((t for t in self.tracks.values() if len(t.rows) >= cfg.track_min_frames),
                      key=lambda t: (-len(t.rows), t.id))[:cfg.max_tracks]
        kept.sort(key=lambda t: t.id)
        T = len(kept)
        tdata = np.zeros((T, n, N_COLUMNS), np.float32)
        tmask = np.zeros((T, n), bool)
        summary = []
        for r, t in enumerate(kept):
            rows = np.array(sorted(t.rows))
            tdata[r, rows] = np.stack([t.rows[i] for i in rows])
            tmask[r, rows] = True
            boxes = tdata[r, rows, BOX].astype(np.float64)
            summary.append({"id": t.id, "frames": int(len(rows)), "first": int(rows[0]),
                            "last": int(rows[-1]), "mean_box": boxes.mean(0).round(1).tolist(),
                            "median_cx": round(float(np.median((boxes[:, 0] + boxes[:, 2]) / 2)), 2)})
        sides = bind_sides({s["id"]: (s["frames"], s["median_cx"]) for s in summary})
        for s in summary:
            s["side"] = next((k for k, v in sides.items() if v == s["id"]), None)
        extras = track_extras([t.id for t in kept], tdata, tmask)
        return extras, summary, sides, kept
