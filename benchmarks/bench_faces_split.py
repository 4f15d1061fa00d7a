"""Where the ``faces`` stage's time goes, and the floor for each part on this machine.

For one clip (default: a generated 20 s 640x360 talking face) it times, one thread, median of
``--repeats``: decoding alone (the stage's streaming decoder), the stage with O-net tracking on
(``track_onet_inputs`` 3) split by a profiler into key-frame cascades, window cascades, O-net-only
tracked frames, alignment and the rest; and the three nets alone on the inputs they get (FLOPs
counted by ``torch.utils.flop_counter``), so each part can be set against what its model
arithmetic costs.

    .venv/bin/python benchmarks/bench_faces_split.py --seconds 20 --repeats 3 \
        [--onet-inputs 5 --refresh 3 --temperature 3]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path


def timed(into: list[float], f, *args):
    """``f(*args)``, its wall seconds appended to ``into``."""
    t = time.perf_counter()
    out = f(*args)
    into.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--onet-inputs", type=int, default=3)
    ap.add_argument("--refresh", type=int, default=None, help="track_onet_refresh (unset: off)")
    ap.add_argument("--temperature", type=float, default=None, help="track_onet_temperature (unset: off)")
    args = ap.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from avpipe.extractors.faces import Faces, FacesConfig
    from avpipe.extractors.media import iter_frames
    from avpipe.sample.media import face_frames, write_clip

    torch.set_num_threads(1)
    w, h = (int(v) for v in args.size.split("x"))
    path = Path(tempfile.mkdtemp()) / "clip.mp4"
    write_clip(path, face_frames(int(args.seconds * 25), size=(w, h)), fps=25.0)
    st = Faces(FacesConfig(track_onet_inputs=args.onet_inputs, track_onet_refresh=args.refresh,
                           track_onet_temperature=args.temperature))
    st.ensure_loaded()
    torch.set_num_threads(1)
    frames = list(iter_frames(path))
    n = len(frames)

    dec, stage = [], []
    for _ in range(args.repeats):
        timed(dec, lambda: sum(1 for _ in iter_frames(path)))
        timed(stage, lambda: st.process(iter(frames), n))
    total = statistics.median(stage)
    pr = cProfile.Profile()
    pr.runcall(st.process, iter(frames), n)
    stats = pstats.Stats(pr).stats
    prof_total = sum(v[2] for v in stats.values())  # tottime sum

    def cum(name: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == name and "faces" in k[0])

    full, window, onet, align = cum("full"), cum("_window"), cum("onet_track"), cum("align_face")
    parts = {"key-frame full cascade": full, "window cascades (anchors)": window - 0,
             "O-net-only tracked frames": onet, "alignment (crops)": align}
    print(f"{args.size}, {n} frames, 1 thread; decode alone {n / statistics.median(dec):.0f} f/s; "
          f"faces (O-net tracking, frames already decoded) {n / total:.1f} f/s")
    print("| part | share of faces | ms per video frame |")
    print("|---|---|---|")
    for k, v in parts.items():
        print(f"| {k} | {100 * v / prof_total:.0f} % | {1000 * v / prof_total * total / n:.2f} |")
    rest = prof_total - sum(parts.values())
    print(f"| rest (tracking logic, chunks, Python) | {100 * rest / prof_total:.0f} % | "
          f"{1000 * rest / prof_total * total / n:.2f} |")

    print("\n| net | input | GFLOP per call | ms per call | GFLOP/s |")
    print("|---|---|---|---|---|")
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    eng = st.engine
    for name, net, shape in (("P-net", eng.pnet, (1, 3, 96, 96)), ("R-net", eng.rnet, (30, 3, 24, 24)),
                             ("O-net", eng.onet, (3, 3, 48, 48)), ("O-net", eng.onet, (10, 3, 48, 48))):
        x = torch.randn(*shape).contiguous(memory_format=torch.channels_last) if name == "P-net" else torch.randn(*shape)
        # FLOPs of the eager net: the stage's R/O-nets are TorchScript-frozen with oneDNN
        # convolutions, which the counter does not see (it counted only their Linear layers)
        ref = {"P-net": PNet, "R-net": RNet, "O-net": ONet}[name]().eval()
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                ref(x)
            flops = fc.get_total_flops()
            ts = []
            for _ in range(20):
                timed(ts, net, x)
        ms = 1000 * statistics.median(ts)
        print(f"| {name} | {tuple(shape)} | {flops / 1e9:.4f} | {ms:.2f} | {flops / 1e9 / (ms / 1000):.1f} |")


if __name__ == "__main__":
    main()
