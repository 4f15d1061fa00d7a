"""logmel: one row per frame on an anchored window; the tone burst lands on the right rows."""
from __future__ import annotations

import numpy as np
import pytest

from avpipe.extractors.logmel import LogMel, LogMelConfig, log_mel_spectrogram
from avpipe.pipeline.chunks import dense, materialize
from avpipe.pipeline.stage import Runtime

from .test_audio import clip_inputs


def tone_energy(data: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    """Mean log-mel of the bands around 1 kHz, per row."""
    import librosa

    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax, htk=True)[1:-1]
    band = np.flatnonzero(np.abs(centres - 1000) < 150)
    return data[:, : cfg.n_mels][:, band].mean(axis=1)


def test_rows_equal_frames_and_attrs(talking_head) -> None:
    v, inputs = clip_inputs(talking_head)
    r = dense(LogMel().compute(v, inputs))
    n = talking_head.truth["n_frames"]
    assert r.data.shape == (n, 64) and r.mask.shape == (n,)
    assert r.attrs["anchor"] == "forward" and r.attrs["window_s"] == 0.96 and r.attrs["n_patch"] == 96
    assert np.isfinite(r.data).all()
    # The audio ends at 7.71 s: forward windows of the last frames hang mostly past it -> masked.
    t = np.asarray(talking_head.truth["frame_times"])
    assert r.mask[t < 7.0].all() and not r.mask[t > 7.3].any()
    assert (r.data[~r.mask] == 0).all()


def test_centered_short_window_peaks_on_tone(two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    cfg = LogMelConfig(anchor="centered", window_s=0.08)
    r = dense(LogMel(cfg).compute(v, inputs))
    e = tone_energy(r.data, cfg)
    t = np.asarray(two_faces_tone.truth["frame_times"])
    on = (t >= 1.04) & (t <= 1.16)
    off = (t < 0.9) | (t > 1.3)
    assert e[on].min() > e[off].max() + 3.0  # log units: the tone is far above the rest


@pytest.mark.parametrize("anchor,lo,hi", [("forward", 0.04, 1.2), ("causal", 1.0, 2.16)])
def test_anchor_sets_which_rows_hear_the_tone(two_faces_tone, anchor: str, lo: float, hi: float) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    cfg = LogMelConfig(anchor=anchor)
    r = dense(LogMel(cfg).compute(v, inputs))
    e = tone_energy(r.data, cfg)
    t = np.asarray(two_faces_tone.truth["frame_times"])
    # Window [t, t+0.96) (forward) or [t-0.96, t) (causal) contains the whole 1.0-1.2 s burst:
    full = (t >= 0.24) & (t <= 1.0) if anchor == "forward" else (t >= 1.2) & (t <= 1.96)
    none = ((t < lo - 0.05) | (t > hi + 0.05)) & r.mask
    assert full.any() and none.any()
    assert e[full & r.mask].min() > e[none].max() + 1.0


def test_window_frames_gives_jca_causal_window(two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    r = dense(LogMel(LogMelConfig(anchor="causal", window_frames=32, pool="patch")).compute(v, inputs))
    assert r.attrs["window_s"] == pytest.approx(32 / 25)
    assert r.data.shape == (50, 128 * 64)
    assert not r.mask[0]  # a causal window at t=0 lies before the audio


def test_no_audio_gives_masked_rows(no_face_no_audio) -> None:
    v, inputs = clip_inputs(no_face_no_audio)
    r = dense(LogMel(LogMelConfig(pool="mean_std")).compute(v, inputs))
    assert r.data.shape == (38, 128) and not r.mask.any() and not r.data.any()
    assert r.attrs["present"] is False


def test_silent_track_is_valid_and_flat(short_silent) -> None:
    v, inputs = clip_inputs(short_silent)
    r = dense(LogMel(LogMelConfig(anchor="centered", window_s=0.2)).compute(v, inputs))
    assert r.data.shape == (15, 64) and r.mask.any()
    assert np.allclose(r.data[r.mask], np.log(0.01), atol=0.05)


def test_torch_backend_agrees_with_librosa(two_faces_tone) -> None:
    """The GPU path is torch; run the same torch code on CPU and compare with librosa."""
    import avpipe.extractors.logmel as lm

    v, inputs = clip_inputs(two_faces_tone)
    y = inputs["audio"].data
    cfg = LogMelConfig()
    a = log_mel_spectrogram(y, cfg, "cpu")
    sr_win, hop = 400, 160
    b = lm._log_mel_torch(y, lm.mel_matrix(64, 512, cfg.fmin, cfg.fmax), sr_win, hop, 512, cfg.log_offset, "cpu")
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=2e-3)


@pytest.mark.cuda
def test_cuda_stage_matches_cpu(two_faces_tone) -> None:
    pytest.importorskip("librosa")  # the mel filters come from librosa (not on every GPU machine)
    v, inputs = clip_inputs(two_faces_tone)
    a = materialize(LogMel(runtime=Runtime(device="cpu")).compute(v, inputs).data)
    b = materialize(LogMel(runtime=Runtime(device="cuda")).compute(v, inputs).data)
    np.testing.assert_allclose(a, b, atol=2e-3)


def _whole_array_rows(v, inputs, cfg: LogMelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The rows as the stage built them before it streamed: every patch at once, then pooled."""
    import avpipe.extractors.logmel as lm
    from avpipe.extractors.audio import frame_times

    times = frame_times(inputs)
    window = lm.window_seconds(cfg, inputs["probe"].attrs.get("fps"))
    y = inputs["audio"].data
    starts = lm.window_starts(times, window, cfg.anchor)
    spec = log_mel_spectrogram(y, cfg, "cpu")
    a = inputs["audio"].attrs
    mask = lm.coverage(starts, window, float(a.get("valid_start_s", 0.0)),
                       float(a.get("valid_end_s", len(y) / 16000))) >= cfg.min_coverage
    data = lm.pool_patches(lm.frame_patches(spec, starts, window, cfg), cfg.pool).astype(np.float32)
    data[~mask] = 0.0
    return data, mask


@pytest.mark.parametrize("cfg", [LogMelConfig(), LogMelConfig(pool="mean_std", anchor="centered"),
                                 LogMelConfig(pool="patch", anchor="causal", window_frames=32)])
def test_chunked_rows_are_bit_identical_to_whole_array_pooling(talking_head, tmp_path, monkeypatch, cfg) -> None:
    """Streaming changed how rows are built, not what they are: same values, dtype, shard layout
    (so the fingerprint and version stay)."""
    import h5py

    import avpipe.pipeline.chunks as chunks
    from avpipe.pipeline.shard import _write_array
    from avpipe.pipeline.shard_writer import ShardWriter

    monkeypatch.setattr(chunks, "CHUNK_FRAMES", 7)  # many chunks, boundaries everywhere
    v, inputs = clip_inputs(talking_head)
    ref, ref_mask = _whole_array_rows(v, inputs, cfg)
    r = LogMel(cfg, Runtime(device="cpu")).compute(v, inputs)
    assert isinstance(r.data, chunks.RowChunks)
    np.testing.assert_array_equal(r.mask, ref_mask)
    w = ShardWriter(tmp_path, "logmel", "ab" * 16, {})
    w.add("cid", r)
    rec = w.commit()
    with h5py.File(tmp_path / "old.h5", "w") as h5:
        _write_array(h5, "data", ref)
    with h5py.File(tmp_path / rec.relpath, "r") as new, h5py.File(tmp_path / "old.h5", "r") as old:
        a, b = new["cid"]["data"], old["data"]
        assert (a.shape, a.dtype, a.chunks, a.compression) == (b.shape, b.dtype, b.chunks, b.compression)
        assert a[()].tobytes() == b[()].tobytes()


def test_spectrogram_of_a_long_track_in_chunks_equals_the_whole_track(monkeypatch) -> None:
    """Long tracks are transformed SPEC_CHUNK frames at a time; the result is the same to the bit."""
    import avpipe.extractors.logmel as lm

    y = (np.random.default_rng(0).standard_normal(16000 * 100) * 0.1).astype(np.float32)
    chunked = log_mel_spectrogram(y, LogMelConfig())
    assert len(chunked) > 2 * lm.SPEC_CHUNK
    monkeypatch.setattr(lm, "SPEC_CHUNK", 10**9)
    whole = log_mel_spectrogram(y, LogMelConfig())
    assert chunked.shape == whole.shape and chunked.tobytes() == whole.tobytes()
