"""The ``vggish`` stage: a 128-d AudioSet VGGish embedding per video frame.

The network is written here (no package ships it with weights; docs/stages.md#weights) with the module layout
of the public PyTorch port (harritaylor/torchvggish), so its published ``vggish-10086976.pth``
loads as is: ``features.{0,3,6,8,11,13}`` convs (64-128-256-256-512-512, 3×3, max-pool after
blocks 1, 2, 4, 6), ``embeddings.{0,2,4}`` FC 12288→4096→4096→128 (ReLU after each, as in the
port). PCA post-processing uses the port's ``pca_eigen_vectors`` (128×128) / ``pca_means``
(128×1) — from ``vggish_pca_params-970ea276.pth`` or ``pproc.*`` keys inside the main file — then
clips to [-2, 2] and, optionally, quantises to 0..255 like the original release.

Input per frame: the 96×64 log-mel patch (0.96 s) of :mod:`avpipe.extractors.logmel`'s VGGish
frontend, anchored at the frame (``forward`` by default, as in RJCMA). Weights are never random:
without the registry file or ``--weights vggish=PATH`` the stage raises one
:class:`WeightsMissingError`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from avpipe.extractors.audio import SAMPLE_RATE, audio_from, frame_times
from avpipe.extractors.logmel import (ANCHORS, Anchor, LogMelConfig, coverage, frame_patches,
                                      log_mel_spectrogram, window_starts)
from avpipe.extractors.weights import (WeightSpec, WeightsMissingError, file_checksum, load_weights_file,
                                       register_weights, resolve_weights, torch_hub_checkpoints,
                                       weights_override)
from avpipe.pipeline.config_schema import config_dataclass
from avpipe.pipeline.stage import Stage, StageError, StageResult, VideoRef, register_stage

VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
PCA_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth"
PATCH_FRAMES, N_MELS = 96, 64
QUANT_MIN, QUANT_MAX = -2.0, 2.0


def _hub_locate(filename: str):  # noqa: ANN202
    def locate():  # noqa: ANN202
        p = torch_hub_checkpoints() / filename
        return p if p.exists() else None
    return locate


def _download(name: str, url: str, filename: str):  # noqa: ANN202
    def obtain():  # noqa: ANN202
        from avpipe.extractors.weights import avpipe_home, download_file

        return download_file(url, avpipe_home() / "weights" / filename, name=name)
    return obtain


register_weights(WeightSpec(
    name="vggish", filename="vggish-10086976.pth", source="download", url=VGGISH_URL,
    description="VGGish AudioSet weights (torchvggish port state_dict)",
    how=f"download {VGGISH_URL} (torch hub's checkpoint folder is searched too)",
    locate=_hub_locate("vggish-10086976.pth"),
    obtain=_download("vggish", VGGISH_URL, "vggish-10086976.pth")))
register_weights(WeightSpec(
    name="vggish-pca", filename="vggish_pca_params-970ea276.pth", source="download", url=PCA_URL,
    description="VGGish PCA/whitening parameters (torchvggish port)",
    how=f"download {PCA_URL}",
    locate=_hub_locate("vggish_pca_params-970ea276.pth"),
    obtain=_download("vggish-pca", PCA_URL, "vggish_pca_params-970ea276.pth")))


def build_vggish() -> Any:
    """The VGGish network with torchvggish's module names (``features``, ``embeddings``)."""
    import torch
    from torch import nn

    class VGGish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            c_in = 1
            for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                    c_in = int(v)
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, 128), nn.ReLU(inplace=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 96, 64)
            x = self.features(x)
            # The port flattens channels-last (as the TF original): (N, C, H, W) -> (N, H, W, C).
            x = x.permute(0, 2, 3, 1).contiguous().view(x.size(0), -1)
            return self.embeddings(x)

    return VGGish()


def _numpy_safe_globals() -> list[Any]:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    out: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    out += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8")]
    return out


def load_state(path: Any) -> dict[str, Any]:
    # weights_only: user-supplied files are never unpickled as arbitrary objects. The port's PCA
    # file holds numpy arrays, so numpy's array reconstruction is allowed, nothing else.
    sd = load_weights_file(path, what="a VGGish weights file", allow=_numpy_safe_globals(),
                           expected="give the torchvggish state_dict (vggish-10086976.pth) with "
                                    "--weights vggish=PATH")
    if not isinstance(sd, dict):
        raise WeightsMissingError(f"{path} is not a VGGish state_dict (it holds a {type(sd).__name__})")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


@config_dataclass
class VGGishConfig:
    """Semantic options of ``vggish`` (the 0.96 s patch is fixed by the network)."""

    anchor: Annotated[Anchor, Field(description="where the 0.96 s patch sits relative to the frame time: "
                                                "forward (RJCMA) [t, t+w), causal [t-w, t), centered")] = "forward"
    pca: Annotated[bool, Field(description="apply the port's PCA/whitening and clip to [-2, 2]")] = False
    quantize: Annotated[bool, Field(description="with pca: map to 0..255 like the AudioSet release")] = False


@register_stage
class VGGishStage(Stage):
    name = "vggish"
    version = "1"
    config_cls = VGGishConfig
    requires = ("audio",)
    per_frame = True
    videos_per_task = 16
    description = "128-d VGGish embedding per frame from the 0.96 s log-mel patch anchored at it"

    def _paths(self) -> tuple[Any, Any | None]:
        w = resolve_weights("vggish", weights_override(self.runtime, "vggish"))
        p = None
        if self.config.pca:
            try:
                p = resolve_weights("vggish-pca", weights_override(self.runtime, "vggish-pca"))
            except WeightsMissingError:
                if "pproc.pca_eigen_vectors" not in load_state(w):  # some ports bundle the PCA
                    raise
        return w, p

    def weights_id(self) -> str | None:
        w, p = self._paths()
        ids = [file_checksum(w)] + ([file_checksum(p)] if p is not None else [])
        return "+".join(ids)

    def load(self) -> None:
        import torch

        if self.config.anchor not in ANCHORS:
            raise StageError(f"vggish: unknown anchor {self.config.anchor!r}; use one of {ANCHORS}")
        w, p = self._paths()
        sd = load_state(w)
        model = build_vggish()
        body = {k: v for k, v in sd.items() if k.startswith(("features.", "embeddings."))}
        try:
            model.load_state_dict(body, strict=True)
        except RuntimeError as e:
            raise WeightsMissingError(f"{w} is not a VGGish state_dict in the torchvggish layout "
                                      f"(features.N.*, embeddings.N.*): {e}") from e
        self.device = self.runtime.resolve_device()
        self.model = model.eval().to(self.device)
        self.pca_vec = self.pca_mean = None
        if self.config.pca:
            src = load_state(p) if p is not None else sd
            pre = "pproc." if "pproc.pca_eigen_vectors" in src else ""
            self.pca_vec = torch.as_tensor(np.asarray(src[pre + "pca_eigen_vectors"]), dtype=torch.float32)
            self.pca_mean = torch.as_tensor(np.asarray(src[pre + "pca_means"]), dtype=torch.float32).reshape(-1, 1)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        """(N, 96, 64) log-mel patches -> (N, 128) embeddings (post-processed per config)."""
        import torch

        self.ensure_loaded()
        outs = []
        bs = max(1, self.runtime.batch_size)
        with torch.inference_mode():
            for i in range(0, len(patches), bs):
                x = torch.as_tensor(patches[i:i + bs], dtype=torch.float32, device=self.device)[:, None]
                e = self.model(x).float().cpu()
                if self.config.pca:
                    e = (self.pca_vec @ (e.T - self.pca_mean)).T
                    e = e.clamp(QUANT_MIN, QUANT_MAX)
                    if self.config.quantize:
                        e = torch.round((e - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN)))
                outs.append(e.numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 128), np.float32)

    def compute(self, video: VideoRef, inputs: Mapping[str, Any]) -> StageResult:
        cfg: VGGishConfig = self.config
        times = frame_times(inputs)
        attrs: dict[str, Any] = {"anchor": cfg.anchor, "window_s": 0.96, "patch": [PATCH_FRAMES, N_MELS],
                                 "pca": cfg.pca, "quantize": cfg.quantize and cfg.pca}
        audio = audio_from(inputs)
        if audio is None:
            return StageResult(data=np.zeros((len(times), 128), np.float32),
                               mask=np.zeros(len(times), bool), attrs={**attrs, "present": False})
        self.ensure_loaded()
        y, a_attrs = audio
        fe = LogMelConfig(n_mels=N_MELS, window_s=0.96, anchor=cfg.anchor)
        spec = log_mel_spectrogram(y, fe, self.device)
        starts = window_starts(times, 0.96, cfg.anchor)
        patches = frame_patches(spec, starts, 0.96, fe)
        mask = coverage(starts, 0.96, float(a_attrs.get("valid_start_s", 0.0)),
                        float(a_attrs.get("valid_end_s", len(y) / SAMPLE_RATE))) >= fe.min_coverage
        data = np.zeros((len(times), 128), np.float32)
        if mask.any():
            data[mask] = self.embed(patches[mask])
        return StageResult(data=data, mask=mask, attrs={**attrs, "present": True})
