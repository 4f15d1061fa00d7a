"""Training samples/s of the fusion data path vs a naive per-window HDF5 Dataset + DataLoader.

Same cache, same windows (T=300, hop 200), same batch size, same run. The naive path is what one
writes first: a ``torch.utils.data.Dataset`` whose ``__getitem__`` reads one window of every modality
from the HDF5 shard (``ShardEntry.read_rows``) plus its labels, through a DataLoader with 2 workers.
The bank path: every labelled video loaded once (timed separately) into contiguous tensors, a
batch = one gather per modality. No model in either: this measures the data path alone.

    .venv/bin/python benchmarks/bench_datapath.py --data benchmarks/out/syn --batches 40 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


class NaiveWindows(torch.utils.data.Dataset):
    def __init__(self, entries: list[dict], labels: list[np.ndarray], windows: list[tuple[int, int, int]], T: int,
                 dims: dict[str, int]):
        self.entries, self.labels, self.windows, self.T, self.dims = entries, labels, windows, T, dims

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        v, s, n = self.windows[i]
        out = {}
        for m, e in self.entries[v].items():
            x = np.zeros((self.T, self.dims[m]), np.float32)
            x[:n] = e.read_rows(s, s + n)
            out[m] = torch.from_numpy(x)
        y = np.full((self.T, 2), -5, np.float32)
        y[:n] = self.labels[v][s:s + n]
        return out, torch.from_numpy(y)


def measure(data: str, *, window: int = 300, hop: int = 200, batch_size: int = 32, batches: int = 40,
            repeats: int = 3, workers: int = 2, device: str = "cpu", dtype: str = "auto",
            log=print) -> dict:
    """Samples/s of the bank path and of the naive path on the train split of ``data`` (a folder
    with ``cache/`` and ``labels/``), ``repeats`` times each, alternating; returns the raw figures."""
    from avpipe.fusion.data import TrackRef, compute_stats, load_bank
    from avpipe.fusion.labels import assign_splits, load_labels, match_videos
    from avpipe.fusion.source import CacheSource, StageRef
    from avpipe.fusion.windows import batches as batch_order
    from avpipe.fusion.windows import make_windows, window_starts

    src = CacheSource(f"{data}/cache")
    tracks = [t for t in assign_splits(load_labels(f"{data}/labels")) if t.split == "train"]
    keymap = match_videos(tracks, [k for k, _ in src.videos()])
    refs = [TrackRef(t.name, keymap[t.name], t) for t in tracks]
    mods = {"visual": "visual", "audio": "logmel", "text": "text"}
    fps = {m: (st, src.resolve(StageRef(st), [r.video for r in refs])) for m, st in mods.items()}
    t = time.perf_counter()
    bank = load_bank(src, fps, refs, device=device, dtype=dtype)
    bank.set_stats(compute_stats([bank]))
    load_s = time.perf_counter() - t
    log(f"{len(refs)} train videos, {bank.n_rows:,} frames, bank {bank.nbytes() / 2**20:.0f} MiB, "
        f"loaded once in {load_s:.1f}s")
    w = make_windows(bank.offsets, window, hop, bank.y_valid, require_labels=True)

    def run_bank(epoch: int) -> float:
        t = time.perf_counter()
        n = 0
        for i, idx in enumerate(batch_order(len(w), batch_size, seed=0, epoch=epoch, device=bank.device)):
            if i >= batches:
                break
            bank.gather(w.select(idx), window)
            n += len(idx)
        if bank.device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    from avpipe.pipeline.store import Cache

    cache = Cache(f"{data}/cache")
    entries = [{m: cache.read(fps[m][0], r.video, fingerprint=fps[m][1]) for m in mods} for r in refs]
    labels = [r.labels.aligned(int(bank.offsets[i + 1] - bank.offsets[i])) for i, r in enumerate(refs)]
    v, s, n = window_starts(np.diff(bank.offsets.cpu().numpy()), window, hop)
    naive = NaiveWindows(entries, labels, list(zip(v.tolist(), s.tolist(), n.tolist())), window,
                         bank.dims)

    def run_naive(epoch: int) -> float:
        g = torch.Generator().manual_seed(epoch)
        dl = torch.utils.data.DataLoader(naive, batch_size=batch_size, shuffle=True, generator=g,
                                         num_workers=workers, persistent_workers=False)
        t = time.perf_counter()
        k = 0
        for i, (x, y) in enumerate(dl):
            if i >= batches:
                break
            k += y.shape[0]
        return k / (time.perf_counter() - t)

    rb, rn = [], []
    for r in range(repeats):
        rb.append(run_bank(r))
        rn.append(run_naive(r))
        log(f"  repeat {r}: bank {rb[-1]:,.0f} samples/s, naive {rn[-1]:,.0f} samples/s")
    mb, mn = statistics.median(rb), statistics.median(rn)
    return {"train_videos": len(refs), "frames": bank.n_rows, "bank_bytes": bank.nbytes(), "load_s": load_s,
            "bank_samples_s": rb, "naive_samples_s": rn, "bank_median": mb, "naive_median": mn,
            "ratio": mb / mn, "workers": workers, "window": window, "hop": hop, "batch_size": batch_size,
            "batches": batches}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="benchmarks/out/syn")
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--hop", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="bank dtype: auto (as cached) | float32 | float16")
    a = ap.parse_args()
    r = measure(a.data, window=a.window, hop=a.hop, batch_size=a.batch_size, batches=a.batches,
                repeats=a.repeats, workers=a.workers, device=a.device, dtype=a.dtype)
    print(f"median: bank {r['bank_median']:,.0f} samples/s, naive HDF5 Dataset (workers={a.workers}) "
          f"{r['naive_median']:,.0f} samples/s, speed-up {r['ratio']:.1f}x (window {a.window}, "
          f"batch {a.batch_size}, {a.batches} batches)")


if __name__ == "__main__":
    main()
