"""One device resolver: extraction stages and fusion training agree on what ``auto`` means."""
from __future__ import annotations

import pytest

from avpipe.pipeline.device import resolve_device
from avpipe.pipeline.types import Runtime


@pytest.mark.parametrize("given", ["cpu", "cuda", "cuda:3", "mps"])
def test_an_explicit_device_is_kept_as_given(given):
    assert resolve_device(given) == given == Runtime(device=given).resolve_device()


@pytest.mark.parametrize(("has_gpu", "rank", "want"), [
    (False, None, "cpu"), (False, "2", "cpu"), (True, None, "cuda:0"), (True, "1", "cuda:1")])
def test_auto_is_this_processs_gpu_for_stages_and_for_training(monkeypatch, has_gpu, rank, want):
    torch = pytest.importorskip("torch")
    from avpipe.fusion.inference import resolve_device as training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    if rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", rank)
    assert resolve_device("auto") == want
    assert Runtime().resolve_device() == want  # what an extraction stage loads its model on
    assert training_device("auto") == torch.device(want)  # what train/predict put the model on
