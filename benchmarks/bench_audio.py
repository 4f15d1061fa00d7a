"""Per-stage throughput of the audio/text stages: audio seconds processed per wall second.

Input: the committed talking-head clip's audio (PyAV decode), tiled to ``--seconds`` of speech,
with probe timestamps at 25 fps. Each stage is timed ``--repeats`` times after one warm-up (model
loading excluded: a worker loads once per task); the median is printed.

    .venv/bin/python benchmarks/bench_audio.py --threads 2 --seconds 30 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", default="logmel,vggish-random,asr-tiny.en,asr-base,text")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from avpipe.extractors.asr import ASR, ASRConfig
    from avpipe.extractors.audio import SAMPLE_RATE, decode_audio
    from avpipe.extractors.logmel import LogMel
    from avpipe.extractors.text import Text
    from avpipe.pipeline.entry import MemoryEntry
    from avpipe.pipeline.stage import Runtime, StageResult, VideoRef

    clip = ROOT / "tests" / "fixtures" / "media" / "talking_head.mp4"
    y, info = decode_audio(clip)
    reps = int(np.ceil(args.seconds * SAMPLE_RATE / len(y)))
    y = np.tile(y, reps)[: int(args.seconds * SAMPLE_RATE)]
    dur = len(y) / SAMPLE_RATE
    times = np.arange(int(dur * 25)) / 25.0
    video = VideoRef("bench", "bench", clip)
    inputs = {"probe": MemoryEntry(StageResult(data=times, attrs={"fps": 25.0}), stage="probe"),
              "audio": MemoryEntry(StageResult(data=y, attrs={"present": True, "valid_start_s": 0.0,
                                                              "valid_end_s": dur}), stage="audio")}
    rt = Runtime(device="cpu", num_threads=args.threads)

    def bench(name: str, stage, inp) -> None:  # noqa: ANN001
        stage.ensure_loaded()
        stage.compute(video, inp)  # warm-up
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            stage.compute(video, inp)
            ts.append(time.perf_counter() - t0)
        med = statistics.median(ts)
        print(f"{name:<16} {dur:6.1f} s audio  median {med:7.3f} s  -> {dur / med:8.1f} audio-s/s "
              f"(runs: {', '.join(f'{t:.3f}' for t in ts)})", flush=True)

    wanted = args.stages.split(",")
    if "logmel" in wanted:
        bench("logmel", LogMel(runtime=rt), inputs)
    if "vggish-random" in wanted:
        import tempfile

        from avpipe.extractors.vggish import VGGishStage, build_vggish

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "v.pth"
            torch.save(build_vggish().state_dict(), p)
            bench("vggish(random)", VGGishStage(runtime=Runtime(device="cpu", num_threads=args.threads,
                                                                  weights={"vggish": str(p)})), inputs)
    asr_out = None
    for m in ("tiny.en", "base"):
        if f"asr-{m}" in wanted:
            st = ASR(ASRConfig(model=m), rt)
            bench(f"asr {m}", st, inputs)
            if asr_out is None:
                asr_out = MemoryEntry(st.compute(video, inputs), stage="asr")
    if "text" in wanted and asr_out is not None:
        bench("text (minilm)", Text(runtime=rt), {**inputs, "asr": asr_out})


if __name__ == "__main__":
    main()
