"""The trainer's data path: labelled videos loaded once into contiguous tensors.

Why: a per-window Dataset that opens HDF5 for every sample spends an epoch in file I/O and
Python. Here every labelled video of a split is read once (through a
:class:`~avpipe.fusion.source.FeatureSource`) into one ``(N_total_frames, D)`` tensor per modality
plus ``offsets``; windows are index arithmetic (:mod:`avpipe.fusion.windows`) and a batch is one
gather per modality on the bank's device (the GPU when there is one).

When the split does not fit the memory budget, :class:`ChunkedBanks` loads groups of whole videos
that do fit, one group at a time, each epoch (shuffled group order, shuffled windows inside a
group): the I/O is then per chunk of videos, still never per sample.

Normalisation: per-modality mean/std over *valid* rows (mask True) of the training split only
(:func:`compute_stats`), applied at gather time; invalid rows are set to 0 after normalisation
(= the training mean, "no evidence").
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from avpipe.display import safe_name
from avpipe.fusion.labels import DEFAULT_TOLERANCE, UNLABELLED, LabelTrack
from avpipe.fusion.source import FeatureArrays, FeatureSource
from avpipe.fusion.windows import Windows, window_rows


# Rows per step when the statistics are computed and the bank normalised: a float64 copy of 32 768
# rows of 512-d features is 128 MiB, ≈ 3 % of an Aff-Wild2-sized float16 bank (4.4 GiB), where
# 262 144-row steps took the train process's peak to ≈ 1.5x the bank.
STATS_CHUNK_ROWS = 1 << 15


@dataclass
class TrackRef:
    """One labelled track to load: label name, the cached video key, labels (or None: predict)."""

    name: str
    video: str
    labels: LabelTrack | None = None
    # whose face features: "left"/"right" (Aff-Wild2 X_left/X_right) or None (the main face);
    # derived from the label name when not given
    person: str | None = None

    def __post_init__(self) -> None:
        if self.person is None and self.labels is not None:
            from avpipe.fusion.persons import person_side

            self.person = person_side(self.labels.name)


@dataclass
class Stats:
    """Per-modality normalisation statistics (float32 vectors)."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, Sequence[float]]]) -> "Stats":
        return cls({m: np.asarray(v["mean"], np.float32) for m, v in d.items()},
                   {m: np.asarray(v["std"], np.float32) for m, v in d.items()})


@dataclass
class Batch:
    x: dict[str, torch.Tensor]  # (B, T, D) float32, normalised, invalid rows zeroed
    mask: dict[str, torch.Tensor]  # (B, T) bool
    y: torch.Tensor  # (B, T, 2)
    y_mask: torch.Tensor  # (B, T) bool: labelled and inside the video
    rows: torch.Tensor  # (B, T) global rows (for scattering predictions back)
    inwin: torch.Tensor  # (B, T) bool


@dataclass
class FeatureBank:
    """Contiguous tensors of a set of tracks; row ``offsets[i]:offsets[i+1]`` is track ``names[i]``."""

    names: list[str]
    videos: list[str]
    x: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    y: torch.Tensor
    y_valid: torch.Tensor
    offsets: torch.Tensor
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(t.shape[1]) for m, t in self.x.items()}

    def nbytes(self) -> int:  # noqa: D102
        return sum(t.element_size() * t.numel() for t in self.x.values())

    def set_stats(self, stats: Stats, chunk: int = STATS_CHUNK_ROWS) -> None:
        """Normalise the bank *in place*, once: ``(x - mean) / std`` on valid rows, 0 elsewhere.

        Done once per load rather than per batch, so a batch is a bare gather (the per-batch
        arithmetic on (B, T, D) floats cost more than the gather itself on CPU). One float32 copy
        of ``chunk`` rows at a time, modified in place: the bank's peak stays near the bank."""
        if self._norm:
            raise RuntimeError("bank already normalised")
        for m, t in self.x.items():
            mu = torch.as_tensor(stats.mean[m], device=self.device, dtype=torch.float32)
            sd = torch.as_tensor(stats.std[m], device=self.device, dtype=torch.float32)
            for i in range(0, t.shape[0], chunk):
                v = t[i:i + chunk].float()
                v.sub_(mu).div_(sd).mul_(self.valid[m][i:i + chunk].unsqueeze(1))
                t[i:i + chunk] = v
            self._norm[m] = (mu, sd)

    def track_slice(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def gather(self, w: Windows, window: int) -> Batch:
        """One batch: one gather per modality. Padding positions index the zero sentinel row
        (row ``n_rows``), so no masking arithmetic is needed; no I/O, no Python per sample."""
        rows, inwin = window_rows(w, window, pad_row=self.y.shape[0] - 1)
        flat = rows.reshape(-1)
        xs, ms = {}, {}
        for m, t in self.x.items():
            xs[m] = t.index_select(0, flat).view(*rows.shape, t.shape[1]).float()
            ms[m] = self.valid[m][rows]
        return Batch(xs, ms, self.y[rows], self.y_valid[rows], rows, inwin)

# ----------------------------------------------------------------------------- loading
def fit_rows(a: FeatureArrays, n: int, dim: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Pad/truncate one modality to ``n`` rows (padding: mask False). Absent stream → all invalid."""
    if not a.present or a.data.size == 0:
        return np.zeros((n, dim), dtype), np.zeros(n, bool)
    d = a.data[:n].astype(dtype, copy=False)
    m = a.mask[:n].astype(bool, copy=False)
    if len(d) < n:
        d = np.concatenate([d, np.zeros((n - len(d), d.shape[1]), dtype)])
        m = np.concatenate([m, np.zeros(n - len(m), bool)])
    return d, m


def _load_track(source: FeatureSource, ref: tuple[str, str], t: TrackRef) -> FeatureArrays:
    """One modality of one track: the person's rows for ``_left``/``_right`` labels."""
    if t.person is None:
        return source.load(*ref, t.video)
    from avpipe.fusion.persons import PersonTrackError

    try:
        return source.load(*ref, t.video, person=t.person)
    except PersonTrackError as e:
        raise PersonTrackError(f"label {t.name!r}: {e}") from e


def probe_dims(source: FeatureSource, fingerprints: Mapping[str, tuple[str, str]], video: str) -> dict[str, tuple[int, np.dtype]]:
    """(dim, dtype) per modality from one video's entries."""
    out = {}
    for m, (stage, fp) in fingerprints.items():
        a = source.load(stage, fp, video)
        out[m] = (int(a.data.shape[1]) if a.data.ndim == 2 else 0, a.data.dtype)
    return out


def modality_info(source: FeatureSource, ref: tuple[str, str], videos: Sequence[str], dim: int | None,
                   dtype: str) -> tuple[int, np.dtype]:
    """(dim, dtype) of one modality in the bank: from the first video whose entry has rows (read
    one at a time and dropped; usually the first video). ``dim`` given: only the dtype is needed."""
    sample = None
    if dim is None or dtype == "auto":
        for v in videos:
            a = source.load(*ref, v)
            if a.data.size:
                sample = (int(a.data.shape[1]), a.data.dtype)
                break
            del a
    d = int(dim) if dim is not None else (sample[0] if sample is not None else 0)
    dt = np.dtype(sample[1] if sample is not None else np.float32) if dtype == "auto" else np.dtype(dtype)
    return d, (dt if dt.kind == "f" else np.dtype(np.float32))


def track_rows(source: FeatureSource, ref: tuple[str, str], t: TrackRef) -> int:
    """Rows of one track: the entry's row count from the index; a person's track is read (and
    dropped) since its rows come from the entry's per-person extras."""
    if t.person is None:
        return source_rows(source, ref, t.video)
    return int(_load_track(source, ref, t).data.shape[0])


def empty_reason(x: np.ndarray, valid: np.ndarray) -> str | None:
    """Why a track's modality carries no information, or None: every row masked (no audio
    stream, no face), or every valid row the same vector (digital silence, a frozen frame)."""
    if not valid.any():
        return "100 % masked (no valid row)"
    rows = x[valid]
    if len(rows) > 1 and bool(np.all(rows == rows[0])):
        return f"constant ({len(rows)} valid rows, all the same vector)"
    return None


def _warn_if_empty(track: str, modality: str, stage: str, x: np.ndarray, valid: np.ndarray) -> None:
    """One warning per labelled track whose modality is empty: the model trains on it silently
    otherwise (a video without audio, digital silence)."""
    why = empty_reason(x, valid)
    if why:
        warnings.warn(f"labelled track {safe_name(track)!r}: modality {modality!r} (stage {stage!r}) is {why}; "
                      f"the model learns nothing from it for this track", stacklevel=3)


def load_bank(source: FeatureSource, fingerprints: Mapping[str, tuple[str, str]], tracks: Sequence[TrackRef], *,
              device: str | torch.device = "cpu", dtype: str = "auto", tolerance: int = DEFAULT_TOLERANCE,
              dims: Mapping[str, int] | None = None, reference: str | None = None) -> FeatureBank:
    """Read every track's features once into contiguous tensors on ``device``.

    ``fingerprints``: modality -> (stage, fingerprint). The frame count of a video is the row count of the
    ``reference`` modality (default: the first); other modalities are padded/truncated to it
    (per-frame stages all write one row per probe frame, so this only absorbs absent streams).
    Labels are aligned to it with ``tolerance`` (labels.LabelTrack.aligned).

    Two passes, so peak memory stays near the bank itself, never the bank plus every video's
    arrays: sizes first (row counts from the index, dims and dtypes from one entry), the bank
    allocated once, then each video read, copied into place and released before the next.
    """
    device = torch.device(device)
    mods = list(fingerprints)
    ref = reference or mods[0]
    videos = list(dict.fromkeys(t.video for t in tracks))
    info = {m: modality_info(source, fingerprints[m], videos, dims.get(m) if dims else None, dtype) for m in mods}
    lengths = [track_rows(source, fingerprints[ref], t) for t in tracks]
    N = int(sum(lengths))
    offsets = np.zeros(len(tracks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    # one extra all-zero, invalid, unlabelled sentinel row at the end: padding gathers it
    X = {m: np.zeros((N + 1, info[m][0]), info[m][1]) for m in mods}
    V = {m: np.zeros(N + 1, bool) for m in mods}
    Y = np.full((N + 1, 2), UNLABELLED, np.float32)
    by_track: dict[tuple[str, str | None], list[int]] = {}
    for i, t in enumerate(tracks):
        by_track.setdefault((t.video, t.person), []).append(i)
    for idxs in by_track.values():
        arrays = {m: _load_track(source, fingerprints[m], tracks[idxs[0]]) for m in mods}
        for i in idxs:
            t = tracks[i]
            s, e = int(offsets[i]), int(offsets[i + 1])
            n = e - s
            for m in mods:
                a = arrays[m]
                if a.data.size and a.data.shape[0] != n and abs(a.data.shape[0] - n) > tolerance:
                    warnings.warn(f"{safe_name(t.video)}: modality {m!r} has {a.data.shape[0]} rows, {ref!r} has {n}; "
                                  f"padding/truncating", stacklevel=2)
                X[m][s:e], V[m][s:e] = fit_rows(a, n, info[m][0], info[m][1])
            if t.labels is not None:
                Y[s:e] = t.labels.aligned(n, tolerance)
                if bool(t.labels.valid.any()):
                    for m in mods:
                        _warn_if_empty(t.name, m, fingerprints[m][0], X[m][s:e], V[m][s:e])
        del arrays  # this track's arrays go before the next one is read
    # NaN/inf labels count as unlabelled, exactly like -5: masked out of loss and metric (a NaN that
    # reached them would turn the whole epoch's CCC into NaN); labels.py warns once per file.
    Y[~np.all(np.isfinite(Y), axis=1)] = UNLABELLED
    yv = np.all(Y != UNLABELLED, axis=1)
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return FeatureBank(names=[t.name for t in tracks], videos=[t.video for t in tracks],
                       x={m: to(X[m]) for m in mods}, valid={m: to(V[m]) for m in mods},
                       y=to(Y), y_valid=to(yv), offsets=to(offsets), device=device)


def compute_stats(banks: Sequence[FeatureBank] | Iterator[FeatureBank], chunk: int = STATS_CHUNK_ROWS) -> Stats:
    """Mean/std per modality over valid rows (float64 accumulation, in row chunks so a 2.8 M-row
    bank never needs a float64 copy; the square is taken in place, so one float64 chunk is all
    this adds to the bank's memory). Pass the *training* banks only."""
    s1: dict[str, torch.Tensor] = {}
    s2: dict[str, torch.Tensor] = {}
    cnt: dict[str, float] = {}
    for b in banks:
        for m, t in b.x.items():
            for i in range(0, t.shape[0], chunk):
                x = t[i:i + chunk][b.valid[m][i:i + chunk]].double()  # sentinel row is invalid
                s1[m] = s1.get(m, 0) + x.sum(0).cpu()
                s2[m] = s2.get(m, 0) + x.square_().sum(0).cpu()
                cnt[m] = cnt.get(m, 0.0) + x.shape[0]
    mean, std = {}, {}
    for m in s1:
        n = max(cnt[m], 1.0)
        mu = s1[m] / n
        var = (s2[m] / n - mu * mu).clamp_min(0)
        mean[m] = mu.float().numpy()
        std[m] = var.sqrt().clamp_min(1e-6).float().numpy()
    return Stats(mean, std)


# ----------------------------------------------------------------------------- providers
def available_memory_bytes(device: torch.device) -> int:
    """Free memory of the device the bank will live on (MemAvailable for CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def estimate_bytes(n_rows: int, dims: Mapping[str, tuple[int, np.dtype]]) -> int:
    per_row = sum(d * np.dtype(dt).itemsize + 1 for d, dt in dims.values()) + 2 * 4 + 1
    return int(n_rows * per_row)


class InMemoryBanks:
    """The whole split in one bank, loaded once and kept for every epoch."""

    chunked = False

    def __init__(self, bank: FeatureBank) -> None:
        self.bank = bank

    def groups(self, epoch: int, seed: int | None = None) -> Iterator[FeatureBank]:
        yield self.bank

    @property
    def dims(self) -> dict[str, int]:
        return self.bank.dims


class ChunkedBanks:
    """Groups of whole tracks under a byte budget, loaded one group at a time per epoch."""

    chunked = True

    def __init__(self, loader, groups: list[list[TrackRef]], dims: dict[str, int]) -> None:
        self.loader = loader  # callable(list[TrackRef]) -> FeatureBank
        self.track_groups = groups
        self._dims = dims
        self._stats: Stats | None = None

    @property
    def dims(self) -> dict[str, int]:
        return dict(self._dims)

    def set_stats(self, stats: Stats) -> None:
        self._stats = stats

    def groups(self, epoch: int, seed: int | None = None) -> Iterator[FeatureBank]:
        order = list(range(len(self.track_groups)))
        if seed is not None:
            order = np.random.default_rng([seed, epoch]).permutation(len(order)).tolist()
        for gi in order:
            b = self.loader(self.track_groups[gi])
            if self._stats is not None:
                b.set_stats(self._stats)
            yield b
            del b


def plan_groups(lengths: Sequence[int], bytes_per_row: int, budget: int) -> list[list[int]]:
    """Consecutive groups of track indices whose rows fit ``budget`` bytes (at least one each)."""
    groups, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        need = n * bytes_per_row
        if cur and used + need > budget:
            groups.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += need
    if cur:
        groups.append(cur)
    return groups


def source_rows(source: FeatureSource, ref: tuple[str, str], video: str) -> int:
    """Row count of one entry: from the index when the source knows it, else by reading."""
    f = getattr(source, "n_rows", None)
    if f is not None:
        n = f(ref[0], ref[1], video)
        if n is not None:
            return int(n)
    return int(source.load(*ref, video).data.shape[0])


def make_provider(source: FeatureSource, fingerprints: Mapping[str, tuple[str, str]], tracks: Sequence[TrackRef], *,
                  device: str | torch.device, dtype: str = "auto", tolerance: int = DEFAULT_TOLERANCE,
                  budget_bytes: int | None = None, force_chunked: bool = False) -> InMemoryBanks | ChunkedBanks:
    """One bank if the split fits ``budget_bytes`` (default: half the device's free memory),
    else :class:`ChunkedBanks` (groups of whole videos under the budget)."""
    device = torch.device(device)
    if not tracks:
        raise ValueError("no tracks to load")
    dims = probe_dims(source, fingerprints, tracks[0].video)
    if dtype != "auto":
        dims = {m: (d, np.dtype(dtype)) for m, (d, _) in dims.items()}
    budget = int(budget_bytes) if budget_bytes is not None else available_memory_bytes(device) // 2
    ref = fingerprints[next(iter(fingerprints))]
    lengths = [source_rows(source, ref, t.video) for t in tracks]
    if not force_chunked and estimate_bytes(sum(lengths), dims) <= budget:
        return InMemoryBanks(load_bank(source, fingerprints, tracks, device=device, dtype=dtype, tolerance=tolerance))
    groups = plan_groups(lengths, max(1, estimate_bytes(1, dims)), max(budget, 1))
    plain = {m: d for m, (d, _) in dims.items()}

    def loader(group: list[TrackRef]) -> FeatureBank:
        return load_bank(source, fingerprints, group, device=device, dtype=dtype, tolerance=tolerance, dims=plain)

    return ChunkedBanks(loader, [[tracks[i] for i in g] for g in groups], plain)
