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
    def __init__(self, entries: list[dict], labels: list[np.ndarray], windows: list[tuple[int, int, int]], T: int):
        self.entries, self.labels, self.windows, self.T = entries, labels, windows, T

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        v, s, n = self.windows[i]
        out = {}
        for m, e in self.entries[v].items():
            x = np.zeros((self.T, e.shape[1]), np.float32)
            x[:n] = e.read_rows(s, s + n)
            out[m] = torch.from_numpy(x)
        y = np.full((self.T, 2), -5, np.float32)
        y[:n] = self.labels[v][s:s + n]
        return out, torch.from_numpy(y)


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
    from avpipe.fusion.data import TrackRef, compute_stats, load_bank
    from avpipe.fusion.labels import assign_splits, load_labels, match_videos
    from avpipe.fusion.source import CacheSource, StageRef
    from avpipe.fusion.windows import batches, make_windows, window_starts

    src = CacheSource(f"{a.data}/cache")
    tracks = [t for t in assign_splits(load_labels(f"{a.data}/labels")) if t.split == "train"]
    keymap = match_videos(tracks, [k for k, _ in src.videos()])
    refs = [TrackRef(t.name, keymap[t.name], t) for t in tracks]
    mods = {"visual": "visual", "audio": "logmel", "text": "text"}
    fps = {m: (st, src.resolve(StageRef(st), [r.video for r in refs])) for m, st in mods.items()}
    t = time.perf_counter()
    bank = load_bank(src, fps, refs, device=a.device, dtype=a.dtype)
    bank.set_stats(compute_stats([bank]))
    load_s = time.perf_counter() - t
    print(f"{len(refs)} train videos, {bank.n_rows:,} frames, bank {bank.nbytes() / 2**20:.0f} MiB, "
          f"loaded once in {load_s:.1f}s")
    w = make_windows(bank.offsets, a.window, a.hop, bank.y_valid, require_labels=True)

    def run_bank(epoch: int) -> float:
        t = time.perf_counter()
        n = 0
        for i, idx in enumerate(batches(len(w), a.batch_size, seed=0, epoch=epoch, device=bank.device)):
            if i >= a.batches:
                break
            b = bank.gather(w.select(idx), a.window)
            n += len(idx)
        if bank.device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    from avpipe.pipeline.store import Cache

    cache = Cache(f"{a.data}/cache")
    entries = [{m: cache.read(fps[m][0], r.video, fingerprint=fps[m][1]) for m in mods} for r in refs]
    labels = [r.labels.aligned(int(bank.offsets[i + 1] - bank.offsets[i])) for i, r in enumerate(refs)]
    v, s, n = window_starts(np.diff(bank.offsets.cpu().numpy()), a.window, a.hop)
    naive = NaiveWindows(entries, labels, list(zip(v.tolist(), s.tolist(), n.tolist())), a.window)

    def run_naive(epoch: int) -> float:
        g = torch.Generator().manual_seed(epoch)
        dl = torch.utils.data.DataLoader(naive, batch_size=a.batch_size, shuffle=True, generator=g,
                                         num_workers=a.workers, persistent_workers=False)
        t = time.perf_counter()
        k = 0
        for i, (x, y) in enumerate(dl):
            if i >= a.batches:
                break
            k += y.shape[0]
        return k / (time.perf_counter() - t)

    rb, rn = [], []
    for r in range(a.repeats):
        rb.append(run_bank(r))
        rn.append(run_naive(r))
        print(f"  repeat {r}: bank {rb[-1]:,.0f} samples/s, naive {rn[-1]:,.0f} samples/s")
    mb, mn = statistics.median(rb), statistics.median(rn)
    print(f"median: bank {mb:,.0f} samples/s, naive HDF5 Dataset (workers={a.workers}) {mn:,.0f} samples/s, "
          f"speed-up {mb / mn:.1f}x (window {a.window}, batch {a.batch_size}, {a.batches} batches)")


if __name__ == "__main__":
    main()
