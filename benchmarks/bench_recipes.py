"""Training-step time of each published name under recipe ``authors`` vs recipe ``avpipe``.

Why: the authors' recipes change what a step computes (loss formula, no gradient clipping; for
``maven`` BEiT-base's 12 heads / FF 3072 / dropout 0 and the per-window input standardisation), so
the step throughput of the default recipe is measured next to avpipe's, interleaved in one process
(recipe A, recipe B, A, B, …) so that load from other jobs hits both alike; medians reported.

    .venv/bin/python benchmarks/bench_recipes.py --models jca,rjcma,maven --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import statistics

from bench_epochs import bench_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="jca,rja,dca,rjcma,maven")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; one timed step each")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    print(f"threads {a.threads}, fp32, median over {a.rounds} interleaved rounds (1 warm-up + 1 timed step each)")
    print(f"{'model':8s} {'recipe':8s} {'batch':>5s} {'step s':>8s} {'windows/s':>10s}")
    for m in a.models.split(","):
        t: dict[str, list[float]] = {"authors": [], "avpipe": []}
        batch: dict[str, int] = {}
        for _ in range(a.rounds):
            for r in t:
                res = bench_steps(m, 1, 1, "fp32", None, r)
                t[r].append(res["step_s"])
                batch[r] = int(res["batch"])
        for r, v in t.items():
            s = statistics.median(v)
            print(f"{m:8s} {r:8s} {batch[r]:5d} {s:8.3f} {batch[r] / s:10.1f}")


if __name__ == "__main__":
    main()
