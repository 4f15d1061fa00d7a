"""Samples/s of the public data API's datasets vs the trainer's own bank gather.

Same cache, same training windows (T=300, hop 200), same batch size, same process, repeats
alternating: the trainer's path (one bank, a batch = one gather per modality), the public
``InMemoryWindowDataset`` (the same bank, items through a ``DataLoader`` with 0 workers) and the
lazy ``WindowDataset`` (HDF5 read per worker, ``DataLoader`` with 2 workers). No model: the data
path alone.

    .venv/bin/python benchmarks/bench_dataapi.py --data benchmarks/out/syn --batches 20 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def measure(data: str, *, window: int = 300, hop: int = 200, batch_size: int = 32, batches: int = 20,
            repeats: int = 3, workers: int = 2, log=print) -> dict:
    from avpipe.data import InMemoryWindowDataset, WindowDataset
    from avpipe.fusion.windows import batches as batch_order
    from avpipe.fusion.windows import make_windows

    feats = {"visual": "visual", "audio": "logmel", "text": "text"}
    t = time.perf_counter()
    mem = InMemoryWindowDataset(f"{data}/cache", f"{data}/labels", feats, split="train", window=window, hop=hop,
                                stats="self", dtype="auto")
    load_s = time.perf_counter() - t
    lazy = WindowDataset(f"{data}/cache", f"{data}/labels", feats, split="train", window=window, hop=hop,
                         stats=mem.stats)
    bank = mem.bank
    w = make_windows(bank.offsets, window, hop, bank.y_valid, require_labels=True)
    log(f"{len(mem.tracks)} train tracks, {bank.n_rows:,} frames, {len(w)} windows; bank loaded in {load_s:.1f}s")

    def run_bank(epoch: int) -> float:
        t = time.perf_counter()
        n = 0
        for i, idx in enumerate(batch_order(len(w), batch_size, seed=0, epoch=epoch)):
            if i >= batches:
                break
            bank.gather(w.select(idx), window)
            n += len(idx)
        return n / (time.perf_counter() - t)

    def run_loader(ds, nw: int, epoch: int) -> float:
        dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=nw,
                                         generator=torch.Generator().manual_seed(epoch))
        t = time.perf_counter()
        n = 0
        for i, b in enumerate(dl):
            if i >= batches:
                break
            n += b["y"].shape[0]
        return n / (time.perf_counter() - t)

    rb, rm, rl = [], [], []
    for r in range(repeats):
        rb.append(run_bank(r))
        rm.append(run_loader(mem, 0, r))
        rl.append(run_loader(lazy, workers, r))
        log(f"  repeat {r}: trainer bank {rb[-1]:,.0f}, InMemoryWindowDataset {rm[-1]:,.0f}, "
            f"WindowDataset (workers={workers}) {rl[-1]:,.0f} samples/s")
    return {"bank": statistics.median(rb), "in_memory": statistics.median(rm), "lazy": statistics.median(rl),
            "load_s": load_s, "frames": bank.n_rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="benchmarks/out/syn")
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--hop", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    r = measure(a.data, window=a.window, hop=a.hop, batch_size=a.batch_size, batches=a.batches,
                repeats=a.repeats, workers=a.workers)
    print(f"median samples/s: trainer bank {r['bank']:,.0f}, InMemoryWindowDataset {r['in_memory']:,.0f}, "
          f"WindowDataset (workers={a.workers}) {r['lazy']:,.0f}")


if __name__ == "__main__":
    main()
