"""State dicts out of checkpoint files, without ever running code from them.

Why: some released face models (HSEmotion's EfficientNets, several IR-50s) are whole pickled
``nn.Module`` objects, which ``torch.load`` can only open with ``weights_only=False`` — running
whatever the pickle names. Here the file is read with ``weights_only=True`` and every class it
names (listed first with ``torch.serialization.get_unsafe_globals_in_checkpoint``) is mapped to an
inert stand-in that only stores the state it is given; the tensors are then collected from the
modules' ``_parameters``/``_buffers``/``_modules`` dictionaries. Nothing named in the file is
imported or called, and the module classes need not exist in this environment (the pickles were
made with older timm versions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from avpipe.extractors.weights import WeightsMissingError, load_weights_file


class _Inert:
    """Stands in for any class a checkpoint names: keeps its arguments and state, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


def _collect(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    import torch

    d = getattr(obj, "__dict__", {})
    skip = d.get("_non_persistent_buffers_set") or set()
    for k, v in (d.get("_parameters") or {}).items():
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v.detach()
    for k, v in (d.get("_buffers") or {}).items():
        if isinstance(v, torch.Tensor) and k not in skip:
            out[prefix + k] = v
    for k, v in (d.get("_modules") or {}).items():
        if v is not None:
            _collect(v, f"{prefix}{k}.", out)


def read_state_dict(path: str | Path, *, what: str) -> dict[str, Any]:
    """The tensors of a checkpoint: a state_dict (possibly under ``state_dict``/``model``), or a
    pickled module's parameters and buffers, read without executing the pickle."""
    import torch

    path = Path(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except ValueError:  # the legacy (pre-1.6, non-zip) format: a plain weights-only load, no stand-ins
        names = []
    except Exception as e:  # noqa: BLE001 - not a torch file at all
        raise WeightsMissingError(f"{path} is not a torch checkpoint ({type(e).__name__}: {e})") from None
    stubs = [(type(n.rpartition(".")[2] or n, (_Inert,), {}), n) for n in names]
    with torch.serialization.safe_globals(stubs):
        obj = load_weights_file(path, what=what, expected="pass a state_dict or a pickled model")
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), (dict, _Inert)):
            obj = obj[key]
            break
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if isinstance(obj, _Inert):
        out: dict[str, Any] = {}
        _collect(obj, "", out)
        if out:
            return out
    raise WeightsMissingError(f"{path}: no weights found in it (a {type(obj).__name__}); expected {what}")
