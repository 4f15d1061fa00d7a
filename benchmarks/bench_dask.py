"""Dask extraction fills a 2-worker cluster, against ``--jobs 2`` locally (issue 23).

A real cluster of separate processes on loopback (``dask scheduler`` + two ``dask worker
--nworkers 1 --nthreads 1``), the README's command without ``--jobs``; the stages probe, audio
and logmel (no weights needed) on N small clips with audio. Reported: wall time of each, CPU
seconds each Dask worker spent (read from the worker processes), their ratio, and that the two
caches hold identical data (content digests).

    python benchmarks/bench_dask.py [N_CLIPS] [SECONDS]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _digests(cache: Path) -> dict:
    import hashlib

    from avpipe.pipeline.store import Cache

    out = {}
    with Cache(cache) as c:
        for e in c.list():
            ent = c.read(e.stage, e.content_id, fingerprint=e.fingerprint)
            h = hashlib.sha256(ent.data.tobytes())
            if ent.mask is not None:
                h.update(ent.mask.tobytes())
            out[(e.stage, e.content_id)] = h.hexdigest()
    return out


def _cli(*args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "avpipe", "extract", *args, "--no-progress"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(n: int = 24, seconds: float = 6.0) -> None:
    from distributed import Client

    from tests.media import make_clip

    stages = "probe,audio,logmel"
    with tempfile.TemporaryDirectory(prefix="avpipe-bench-dask-") as tmp:
        tmp_p = Path(tmp)
        vids = tmp_p / "videos"
        vids.mkdir()
        for i in range(n):
            make_clip(vids / f"v{i:03d}.mp4", seed=i, audio=True, seconds=seconds, width=64, height=48)
        local_s = _cli("--videos", str(vids), "--cache", str(tmp_p / "local"), "--stages", stages, "--jobs", "2")

        sf = tmp_p / "sched.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                   "--port", "0", "--no-dashboard", "--scheduler-file", str(sf)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            while not sf.exists():
                time.sleep(0.1)
            for _ in range(2):
                procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                               str(sf), "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                               "--no-nanny"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with Client(scheduler_file=str(sf)) as client:
                client.wait_for_workers(2)

                def cpu() -> float:
                    t = os.times()
                    return t.user + t.system

                before = client.run(cpu)
                dask_s = _cli("--videos", str(vids), "--cache", str(tmp_p / "dask"), "--stages", stages,
                              "--backend", "dask", "--scheduler-file", str(sf))
                after = client.run(cpu)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        used = sorted(after[w] - before[w] for w in after)
        same = _digests(tmp_p / "local") == _digests(tmp_p / "dask")
        print(json.dumps({"clips": n, "seconds": seconds, "stages": stages, "local_jobs2_s": round(local_s, 2),
                          "dask_2_workers_s": round(dask_s, 2), "worker_cpu_s": [round(u, 2) for u in used],
                          "cpu_ratio_min_over_max": round(used[0] / used[-1], 3) if used[-1] else None,
                          "identical_digests": same}, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24, float(sys.argv[2]) if len(sys.argv) > 2 else 6.0)
