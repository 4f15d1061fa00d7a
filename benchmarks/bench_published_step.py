"""Training-step time of ``maven`` (segment tokens) and ``maven-frames`` against a module built the
way the authors' MAVEN code is structured, interleaved in one process, medians.

Why: the must-hold of issue #20 — each published model's training step stays at or above the
authors' own module on the same machine. The authors' code is not in the repository; the
reference here is written from the description of their model (docs/models-fusion.md#maven): one
segment of T frames per sample, the visual stream per frame (B, T, 1024), audio and text **one
vector each** (B, 768) fed as one-token sequences to six 2-head ``nn.MultiheadAttention``
pathways, one shared LayerNorm, the two enhanced vectors broadcast over T, Linear 1536→768, two
encoder stacks in parallel, MLP 512-256-2; no masks (the authors pad with zeros and attend to them);
each segment's tensors get N(0, 0.01²) noise and are standardised in the step, as the authors'
data loader does in the training process (0 workers) and ``maven`` does inside ``forward``.

Same sizes for all three (the encoder layer is PyTorch's pre-norm GELU layer with BEiT-base's 12
heads and FF 3072 in each, ``--layers`` per stack), same batch, Adam, MSE, gradient clip 1.0 as the
authors' recipe. ``maven`` and ``maven-frames`` get per-frame cached rows (B, T, D) for audio and
text, as the trainer gives them; ``maven`` pools them to one token per segment inside its step.

    .venv/bin/python benchmarks/bench_published_step.py --rounds 7 --threads 2 --frames 150,450
"""
from __future__ import annotations

import argparse
import statistics
import time

DIMS = {"visual": 1024, "audio": 768, "text": 768}


def authors_structure(layers: int, d: int = 512, embed: int = 768):
    """The reference module (see the module docstring); built from the equations, not their code."""
    import torch
    from torch import nn

    class AuthorsMAVEN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.ModuleDict({m: nn.Linear(DIMS[m], d) for m in DIMS})
            pairs = ("v2a", "v2t", "a2v", "a2t", "t2v", "t2a")
            self.cross = nn.ModuleDict({p: nn.MultiheadAttention(d, 2, dropout=0.1, batch_first=True) for p in pairs})
            self.drop = nn.Dropout(0.1)
            self.norm = nn.LayerNorm(d)
            self.fuse_in = nn.Linear(3 * d, embed)

            def stack() -> nn.TransformerEncoder:
                layer = nn.TransformerEncoderLayer(embed, 12, 3072, dropout=0.0, activation="gelu",
                                                   layer_norm_eps=1e-12, batch_first=True, norm_first=True)
                return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

            self.encoders = nn.ModuleList([stack(), stack()])
            self.mlp = nn.Sequential(nn.Linear(2 * embed, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 256),
                                     nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 2))

        def forward(self, v: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.mlp(torch.cat([enc(h) for h in [self.front_end(v, a, t)] for enc in self.encoders], -1))

        def front_end(self, v: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            V, A, Tx = self.proj["visual"](v), self.proj["audio"](a).unsqueeze(1), self.proj["text"](t).unsqueeze(1)

            def att(p, q, k):
                return self.cross[p](q, k, k, need_weights=False)[0]

            Ve = self.norm(self.drop((V + att("v2a", V, A) + att("v2t", V, Tx)) / 3))
            Ae = self.norm(self.drop((A + att("a2v", A, V) + att("a2t", A, Tx)) / 3))
            Te = self.norm(self.drop((Tx + att("t2v", Tx, V) + att("t2a", Tx, A)) / 3))
            n = V.shape[1]
            return self.fuse_in(torch.cat([Ve, Ae.expand(-1, n, -1), Te.expand(-1, n, -1)], -1))

    return AuthorsMAVEN()


def make_step(kind: str, B: int, T: int, layers: int, ragged: bool = False, front: bool = False):
    """A closure running one training step of ``kind`` (authors / maven / maven-frames). ``ragged``:
    the batch's segments last T/3 … T frames (the authors' zeros after each, avpipe's masked).
    ``front``: the front end alone (projections, six pathways, LayerNorm, fusion Linear), its
    output's mean square as the loss — the part where segment tokens and per-frame rows differ."""
    import torch

    from avpipe.fusion.config import TrainConfig
    from avpipe.fusion.metrics import compute_loss
    from avpipe.fusion.models import create_model

    g = torch.Generator().manual_seed(0)
    y = torch.rand(B, T, 2, generator=g) * 2 - 1
    ym = torch.ones(B, T, dtype=torch.bool)
    torch.manual_seed(0)
    if kind == "authors":
        model = authors_structure(layers)
        v = torch.randn(B, T, DIMS["visual"], generator=g)
        a, t = torch.randn(B, DIMS["audio"], generator=g), torch.randn(B, DIMS["text"], generator=g)

        def standardise(z: torch.Tensor) -> torch.Tensor:  # per tensor of a segment, after N(0, 0.01²) noise
            z = z + 0.01 * torch.randn_like(z)
            dims = tuple(range(1, z.dim()))
            return (z - z.mean(dims, keepdim=True)) / (z.std(dims, keepdim=True) + 1e-8)

        def fwd():
            # the authors' loader standardises every segment at load time, in the training process (0
            # workers), so it is part of their step's time as of ours
            vs, as_, ts = standardise(v), standardise(a), standardise(t)
            return model.front_end(vs, as_, ts) if front else model(vs, as_, ts)
    else:
        cfg = TrainConfig(fusion=kind, recipe="authors", model={"layers": layers}).resolved()
        model = create_model(kind, DIMS, T, **cfg.model)
        x = {m: torch.randn(B, T, dm, generator=g) for m, dm in DIMS.items()}
        mask = {m: torch.ones(B, T, dtype=torch.bool) for m in DIMS}
        if ragged:
            for i, n in enumerate(torch.linspace(T // 3, T, B).long().tolist()):
                for m in DIMS:
                    mask[m][i, n:] = False

        def fwd():
            return model.front_end(x, mask)[0] if front else model(x, mask)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def step() -> float:
        t0 = time.perf_counter()
        out = fwd().float()
        loss = out.pow(2).mean() if front else compute_loss("mse_mean", out, y, ym, {})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default="150,450", help="segment lengths T (frames) to time, comma-separated")
    ap.add_argument("--batch", type=int, default=6, help="segments per batch (the authors' 6)")
    ap.add_argument("--layers", type=int, default=2, help="encoder layers per stack (the authors': 12 of BEiT)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds, one timed step per model each")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--front", action="store_true", help="time the front end alone (before the encoders)")
    ap.add_argument("--ragged", action="store_true", help="segments of T/3 … T frames in a batch (padding "
                                                          "masked by avpipe, attended to by the authors')")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    kinds = ("authors", "maven", "maven-frames")
    print(f"threads {a.threads}, fp32, batch {a.batch}{' ragged' if a.ragged else ''}, "
          + ("front end only" if a.front else f"{a.layers} layer(s) per stack")
          + f", median of {a.rounds} interleaved rounds (1 warm-up step each model first)")
    print(f"{'T':>5s} {'model':13s} {'step s':>8s} {'segments/s':>11s} {'vs authors':>10s}")
    for T in (int(x) for x in a.frames.split(",")):
        steps = {k: make_step(k, a.batch, T, a.layers, a.ragged, a.front) for k in kinds}
        for s in steps.values():
            s()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(a.rounds):
            for k in kinds:
                times[k].append(steps[k]())
        ref = statistics.median(times["authors"])
        for k in kinds:
            med = statistics.median(times[k])
            print(f"{T:5d} {k:13s} {med:8.3f} {a.batch / med:11.1f} {ref / med:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
