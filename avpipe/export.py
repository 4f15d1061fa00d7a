"""Exports of cached features for other tools: NumPy, Parquet/Arrow, Hugging Face datasets.

Why: MMSA-, MERBench- and Hugging Face-based pipelines read arrays or tables, not avpipe's HDF5
shards and SQLite index. An export is the same selection ``avpipe train`` makes (features, labels,
splits, person binding; docs/data.md) read through :mod:`avpipe.data`, written in one of:

* ``npz`` — one ``.npz`` per track (``x_<modality>``, ``mask_<modality>``, ``timestamps``,
  ``labels``, ``label_mask``) at the track's name under the folder;
* ``memmap`` — one ``.npy`` per array over every track, rows concatenated (``np.load(...,
  mmap_mode="r")`` reads them without loading), with ``index.csv`` giving each track's rows;
* ``parquet`` — ``features.parquet``, one row per frame (one row group per track);
* ``hf`` — a ``datasets.Dataset`` with the parquet columns, saved with ``save_to_disk``.

Every export writes ``avpipe_export.json``: the cache, the exact fingerprints and stage configs
the values came from, the selection, and per track its video key, content id, person, split and
row count. The folder is written under a temporary name and renamed when complete, so a failed
export never leaves a half-written folder under the requested name; a track that cannot be read
is reported and left out, the others are exported.
"""
from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avpipe.data import DataError, FeatureStore, VideoFeatures, labelled_tracks
from avpipe.pipeline.atomic import atomic_dir

FORMATS = ("npz", "memmap", "parquet", "hf")
MANIFEST = "avpipe_export.json"
_NEEDS = {"parquet": ("pyarrow",), "hf": ("pyarrow", "datasets")}


class ExportError(RuntimeError):
    """The export could not be made (a missing optional package, an existing folder, no tracks)."""


@dataclass
class Selection:
    """What to export: the feature set and either labelled tracks (``labels`` with the trainer's
    split rules) or cached videos (``videos``, default all) read for ``person``."""

    features: str | dict[str, str]
    labels: str | None = None
    split: list[str] | None = None
    split_file: str | None = None
    val_fraction: float = 0.15
    seed: int = 0
    videos: list[str] | None = None
    person: str | int | None = None
    config: str | None = None


@dataclass
class Item:
    """One exported track."""

    name: str
    video: str
    person: str | int | None = None
    split: str | None = None
    labels: Any = field(default=None, repr=False)


@dataclass
class ExportResult:
    out: Path
    n_tracks: int
    n_rows: int
    failed: list[str]
    fingerprints: dict[str, str]


def require(fmt: str) -> None:
    """Refuse early, with the install command, when ``fmt`` needs an optional package."""
    import importlib

    for mod in _NEEDS.get(fmt, ()):
        try:
            importlib.import_module(mod)
        except ImportError:
            raise ExportError(f"--format {fmt} needs the Python package {mod!r}, which is not installed; "
                              f"install it with: pip install 'avpipe[export]'") from None


def items_for(store: FeatureStore, sel: Selection) -> list[Item]:
    """The tracks a selection names."""
    if sel.labels:
        tracks = labelled_tracks(store, sel.labels, split=sel.split, split_file=sel.split_file,
                                 val_fraction=sel.val_fraction, seed=sel.seed)
        return [Item(t.name, t.video, t.person, t.split, t.labels) for t in tracks]
    vids = sel.videos or store.videos()
    return [Item(v if sel.person is None else f"{v}#{sel.person}", v, sel.person) for v in vids]  # name#person


def _file_name(item: Item, suffix: str) -> str:
    """A track's relative file name, normalised (never escapes the output folder, see
    avpipe.pipeline.discover.output_path_for): the video key with ``_<person>`` when a person was
    asked for, or the label name (every dot kept: label names have no extension)."""
    from avpipe.pipeline.discover import output_path_for

    if item.labels is None:
        return output_path_for("", item.video, ("" if item.person is None else f"_{item.person}") + suffix).as_posix()
    return output_path_for("", item.name + suffix, suffix).as_posix()


def export(cache: str | Path, sel: Selection, out: str | Path, fmt: str, *, overwrite: bool = False,
           log: Callable[[str], None] = print) -> ExportResult:
    """Write the selection to ``out`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    require(fmt)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; choose another --out or pass --overwrite")
    with FeatureStore(cache, sel.config) as store:
        items = items_for(store, sel)
        if not items:
            raise ExportError("the selection names no track (no labelled track matches a cached video, "
                              "or no video is cached)")
        unknown: list[str] = []
        for it in list(items):
            try:
                it.video = store.key(it.video)
            except DataError as e:  # a named video that is not cached: reported, the rest goes on
                log(f"error: {it.name}: {e}")
                unknown.append(it.name)
                items.remove(it)
        if not items:
            raise ExportError(f"none of the named videos is cached ({', '.join(unknown[:5])})")
        fingerprints = store.resolve(sel.features, sorted({i.video for i in items}))
        configs = {f.fingerprint: {"stage": f.stage, "version": f.version, "config": f.config,
                                   "upstream": f.upstream, "weights_id": f.weights_id}
                   for f in store.source.cache.fingerprints()}
        with atomic_dir(out) as tmp:
            reads = _reads(store, fingerprints, items, log)
            writer = {"npz": _write_npz, "memmap": _write_memmap, "parquet": _write_parquet,
                      "hf": _write_hf}[fmt]
            done, failed = writer(tmp, reads, fingerprints, store, items, log)
            failed = unknown + failed
            if not done:
                raise ExportError(f"no track could be read ({len(failed)} failed)")
            manifest = {
                "format": fmt, "created": time.time(), "cache": str(store.root),
                "features": {m: {"stage": s, "fingerprint": f, "config": configs.get(f, {}).get("config"),
                                 "version": configs.get(f, {}).get("version"),
                                 "upstream": configs.get(f, {}).get("upstream")}
                             for m, (s, f) in fingerprints.items()},
                "selection": asdict(sel), "failed": failed,
                "tracks": done,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return ExportResult(out, len(done), sum(t["rows"] for t in done), failed,
                        {m: f"{s}@{f}" for m, (s, f) in fingerprints.items()})


def _reads(store: FeatureStore, fingerprints: dict[str, tuple[str, str]], items: Sequence[Item],
           log: Callable[[str], None]) -> Iterator[tuple[Item, VideoFeatures | None, str | None]]:
    """Each track read once; a track that cannot be read yields its error (the others go on)."""
    for it in items:
        try:
            yield it, store.read(it.video, {}, person=it.person, labels=it.labels, resolved=fingerprints), None
        except DataError as e:
            log(f"error: {it.name}: {e}")
            yield it, None, str(e)


def _track_row(it: Item, v: VideoFeatures, store: FeatureStore, **extra: Any) -> dict[str, Any]:
    return {"name": it.name, "video": v.video, "content_id": store.source.content_id(v.video),
            "person": it.person, "split": it.split, "rows": v.n_frames, **extra}


def _write_npz(tmp: Path, reads, fingerprints, store, items, log) -> tuple[list[dict], list[str]]:
    done, failed = [], []
    for it, v, err in reads:
        if v is None:
            failed.append(it.name)
            continue
        rel = _file_name(it, ".npz")
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"x_{m}": a for m, a in v.x.items()} | {f"mask_{m}": a for m, a in v.mask.items()}
        if v.timestamps is not None:
            arrays["timestamps"] = v.timestamps
        if v.labels is not None:
            arrays["labels"], arrays["label_mask"] = v.labels, v.label_mask
        np.savez(path, **arrays)
        done.append(_track_row(it, v, store, file=rel))
    return done, failed


def _write_memmap(tmp: Path, reads, fingerprints, store, items, log) -> tuple[list[dict], list[str]]:
    """Two passes so that memory stays one track: rows and dims first, then each track copied
    into its place in the ``.npy`` files (np.lib.format.open_memmap)."""
    from avpipe.fusion.data import TrackRef, track_rows  # the trainer's row count

    sizes, ok = [], []
    failed: list[str] = []
    ref = next(iter(fingerprints.values()))
    for it in items:
        try:
            sizes.append(track_rows(store.source, ref, TrackRef(it.name, it.video, None, person=it.person)))
            ok.append(it)
        except Exception as e:  # noqa: BLE001 - reported per track, the others go on
            log(f"error: {it.name}: {' '.join(str(e).split())}")
            failed.append(it.name)
    if not ok:
        return [], failed
    first = store.read(ok[0].video, {}, person=ok[0].person, resolved=fingerprints)
    N = int(sum(sizes))
    has_labels = any(it.labels is not None for it in ok)
    arrs = {f"x_{m}": np.lib.format.open_memmap(tmp / f"x_{m}.npy", "w+", np.float32, (N, a.shape[1]))
            for m, a in first.x.items()}
    arrs |= {f"mask_{m}": np.lib.format.open_memmap(tmp / f"mask_{m}.npy", "w+", np.bool_, (N,)) for m in first.x}
    arrs["timestamps"] = np.lib.format.open_memmap(tmp / "timestamps.npy", "w+", np.float64, (N,))
    if has_labels:
        arrs["labels"] = np.lib.format.open_memmap(tmp / "labels.npy", "w+", np.float32, (N, 2))
        arrs["label_mask"] = np.lib.format.open_memmap(tmp / "label_mask.npy", "w+", np.bool_, (N,))
    done = []
    start = 0
    for (it, v, err), n in zip(_reads(store, fingerprints, ok, log), sizes):
        if v is None or v.n_frames != n:
            failed.append(it.name)
            start += n  # its rows stay zero / masked; index.csv does not list it
            continue
        for m in v.x:
            arrs[f"x_{m}"][start:start + n] = v.x[m]
            arrs[f"mask_{m}"][start:start + n] = v.mask[m]
        arrs["timestamps"][start:start + n] = v.timestamps if v.timestamps is not None else np.nan
        if has_labels:
            arrs["labels"][start:start + n] = v.labels if v.labels is not None else -5
            arrs["label_mask"][start:start + n] = v.label_mask if v.labels is not None else False
        done.append(_track_row(it, v, store, start=start, stop=start + n))
        start += n
    for a in arrs.values():
        a.flush()
    del arrs
    s = io.StringIO()
    w = csv.DictWriter(s, fieldnames=["name", "video", "content_id", "person", "split", "start", "stop"],
                       extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(done)
    (tmp / "index.csv").write_text(s.getvalue())
    return done, failed


def _table(it: Item, v: VideoFeatures) -> Any:
    """One track as an Arrow table: one row per frame."""
    import pyarrow as pa

    n = v.n_frames
    cols: dict[str, Any] = {
        "name": pa.array([it.name] * n, pa.string()),
        "video": pa.array([v.video] * n, pa.string()),
        "person": pa.array([None if it.person is None else str(it.person)] * n, pa.string()),
        "split": pa.array([it.split] * n, pa.string()),
        "frame": pa.array(np.arange(n, dtype=np.int64)),
        "timestamp": pa.array(v.timestamps if v.timestamps is not None else np.full(n, np.nan)),
    }
    if v.labels is not None:
        cols["valence"] = pa.array(v.labels[:, 0].astype(np.float32))
        cols["arousal"] = pa.array(v.labels[:, 1].astype(np.float32))
        cols["label_mask"] = pa.array(v.label_mask)
    for m, a in v.x.items():
        a32 = np.ascontiguousarray(a, dtype=np.float32)
        cols[m] = pa.FixedSizeListArray.from_arrays(pa.array(a32.reshape(-1)), a32.shape[1])
        cols[f"{m}_mask"] = pa.array(v.mask[m])
    return pa.table(cols)


def _write_arrow(path: Path, reads, fingerprints, store, kind: str) -> tuple[list[dict], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    done, failed = [], []
    writer = None
    meta = {b"avpipe": json.dumps({m: f"{s}@{f}" for m, (s, f) in fingerprints.items()}).encode()}
    try:
        for it, v, err in reads:
            if v is None:
                failed.append(it.name)
                continue
            t = _table(it, v)
            if writer is None:
                schema = t.schema.with_metadata(meta)
                writer = (pq.ParquetWriter(path, schema) if kind == "parquet"
                          else pa.ipc.new_stream(pa.OSFile(str(path), "wb"), schema))
            writer.write_table(t.replace_schema_metadata(meta))
            done.append(_track_row(it, v, store))
    finally:
        if writer is not None:
            writer.close()
    return done, failed


def _write_parquet(tmp: Path, reads, fingerprints, store, items, log) -> tuple[list[dict], list[str]]:
    return _write_arrow(tmp / "features.parquet", reads, fingerprints, store, "parquet")


def _write_hf(tmp: Path, reads, fingerprints, store, items, log) -> tuple[list[dict], list[str]]:
    """An Arrow stream written track by track, opened memory-mapped by ``datasets`` (no copy in
    memory, nothing in the Hugging Face cache folder) and saved with ``save_to_disk``."""
    import datasets

    stream = tmp.parent / f".{tmp.name}.arrow"
    try:
        done, failed = _write_arrow(stream, reads, fingerprints, store, "arrow")
        if done:
            ds = datasets.Dataset.from_file(str(stream), in_memory=False)
            ds.save_to_disk(str(tmp))
            del ds
    finally:
        stream.unlink(missing_ok=True)
    return done, failed
