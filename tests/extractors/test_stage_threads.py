"""Loading a stage leaves the process's torch thread count alone: the runner sets threads for
every execution mode (tests/pipeline/test_scale.py), and a stage used directly (render, a
notebook, a benchmark) must not change its caller's setting as a side effect."""
from __future__ import annotations

import pytest


def test_loading_the_faces_stage_keeps_the_callers_threads():
    torch = pytest.importorskip("torch")
    from avpipe.extractors.faces import Faces, FacesConfig
    from avpipe.pipeline.types import Runtime

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        Faces(FacesConfig(), Runtime(device="cpu", num_threads=1)).ensure_loaded()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
