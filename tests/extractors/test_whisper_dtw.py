"""Whisper's word-timing DTW in NumPy (:mod:`avpipe.extractors.whisper_dtw`) against its numba kernel."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.extractors.whisper_dtw import dtw_cpu, numpy_dtw


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.normal(size=(40, 1500)),  # a 30-s window's tokens x audio frames
        -np.abs(rng.normal(size=(60, 600))),
        rng.integers(0, 3, (30, 200)).astype(np.float64),  # many ties: the tie rule decides the path
        np.zeros((6, 9)),  # all ties
        rng.normal(size=(3, 3)).astype(np.float32).astype(np.float64),
        np.zeros((1, 1)), rng.normal(size=(1, 9)), rng.normal(size=(9, 1)),
        np.full((4, 5), 1e30),  # float32 overflow to inf on the way
    ]


def test_equals_whispers_numba_dtw_path_for_path():
    import whisper.timing as timing

    for x in _cases():
        want = timing.dtw_cpu(x)
        got = dtw_cpu(x)
        assert got.dtype == want.dtype and got.shape == want.shape, x.shape
        np.testing.assert_array_equal(got, want, err_msg=str(x.shape))


def test_whisper_uses_it_only_inside_the_block():
    import torch
    import whisper.timing as timing

    numba_kernel = timing.dtw_cpu
    x = torch.from_numpy(_cases()[1])
    with numpy_dtw():
        assert timing.dtw_cpu is dtw_cpu
        inside = timing.dtw(x)  # Whisper's own entry point, as find_alignment calls it
    assert timing.dtw_cpu is numba_kernel
    np.testing.assert_array_equal(inside, numba_kernel(x.double().numpy()))
    with pytest.raises(RuntimeError), numpy_dtw():
        raise RuntimeError("a failed transcription restores it too")
    assert timing.dtw_cpu is numba_kernel
