"""Warm-rerun benchmark: what does "nothing to do" cost compared with the work itself?

Makes N small videos (64x48, 10 fps, 2 s, with audio), runs a cold extract of ``probe`` plus a
cheap per-frame stage (mean frame brightness, which decodes every frame), then a warm rerun, and
prints wall times, their ratio (target <= 2 %) and the warm planning time (target < 2 s).

Both runs go through the real CLI entry in a fresh interpreter (``python -m avpipe extract``), so
interpreter start-up and imports are included, as a user sees them; the in-process planning time
comes from the run summary.

    python benchmarks/bench_warm_rerun.py [--n 100] [--jobs 2] [--out benchmarks/out]
    python benchmarks/bench_warm_rerun.py --real     # real stages: faces + logmel on face clips

``--real`` makes the videos with the sample generator (astronaut face, 160x120, 25 fps, a tone
on the audio track) and runs the real ``faces`` and ``logmel`` stages (with probe and audio), so
the cold run costs what extraction really costs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BRIGHTNESS_STAGE = '''
"""Benchmark-only stage: mean brightness per frame (decodes every frame with PyAV)."""
import numpy as np
from avpipe.pipeline.stage import Stage, StageResult, register_stage

@register_stage
class Brightness(Stage):
    name = "bench_brightness"
    version = "1"
    requires = ("probe",)
    videos_per_task = 10

    def compute(self, video, inputs):
        import av
        with av.open(str(video.path)) as c:
            vals = [f.to_ndarray(format="gray").mean() for f in c.decode(video=0)]
        n = len(inputs["probe"].timestamps)
        vals = (vals + [vals[-1]] * n)[:n]
        return StageResult(data=np.asarray(vals, dtype=np.float32)[:, None])
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--real", action="store_true", help="real faces+logmel stages on face clips")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "warm_rerun")
    a = ap.parse_args()
    from tests.media import make_clip

    shutil.rmtree(a.out, ignore_errors=True)
    videos, cache, plug = a.out / "videos", a.out / "cache", a.out / "plugin"
    plug.mkdir(parents=True)
    (plug / "bench_stages.py").write_text(BRIGHTNESS_STAGE)
    t = time.perf_counter()
    for i in range(a.n):
        path = videos / f"d{i // 10}" / f"clip {i:03d}.mp4"
        if a.real:
            from avpipe.sample.media import talking_head

            talking_head(path, text=None, seconds=a.seconds, size=(160, 120),
                         tone=(0.5, 0.3, 300.0 + 10 * i))
        else:
            make_clip(path, seed=i, seconds=a.seconds, audio=True)
    print(f"made {a.n} videos in {time.perf_counter() - t:.1f} s")
    env = dict(os.environ, PYTHONPATH=f"{plug}{os.pathsep}{REPO}", AVPIPE_PLUGINS="bench_stages")
    cmd = [sys.executable, "-m", "avpipe", "extract", "--videos", str(videos), "--cache", str(cache),
           "--stages", "faces,logmel" if a.real else "bench_brightness", "--jobs", str(a.jobs), "--no-progress"]

    def run(label: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"{label} failed:\n{r.stdout}\n{r.stderr}")
        return dt, r.stdout

    cold, _ = run("cold")
    warm, out = run("warm")
    planned = float(out.split("planned in ")[1].split(" s")[0])
    inproc = float(out.split("total ")[1].split(" s")[0])
    code = ("import time,sys; t=time.perf_counter(); import avpipe.cli; "
            "from avpipe.pipeline.stage import stage_registry; stage_registry(); "
            "print(time.perf_counter()-t)")
    imp = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
    kind = "160x120 @ 25 fps face + AAC" if a.real else "64x48 @ 10 fps + AAC"
    stages = "probe + faces + audio + logmel" if a.real else "probe + bench_brightness"
    print(f"videos            {a.n} ({a.seconds:.0f} s each, {kind}), jobs={a.jobs}")
    print(f"cold extract      {cold:8.2f} s   ({stages})")
    print(f"warm rerun        {warm:8.2f} s   (nothing to do; includes interpreter start + imports {imp:.2f} s)")
    print(f"warm in-process   {inproc:8.2f} s   (lock + discover + plan + summary, no interpreter start)")
    print(f"ratio warm/cold   {100 * warm / cold:8.2f} %  whole command (target <= 2 %)")
    print(f"ratio in-process  {100 * inproc / cold:8.2f} %  pipeline overhead only")
    print(f"warm planning     {planned:8.3f} s   (target < 2 s)")


if __name__ == "__main__":
    main()
