"""egemaps: openSMILE eGeMAPSv02 per video frame, on logmel's windows, anchors and mask."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("opensmile", reason="the egemaps stage needs the [egemaps] extra")

from avpipe.extractors.egemaps import Egemaps, EgemapsConfig, OpenSmileMissing  # noqa: E402
from avpipe.extractors.logmel import LogMel, LogMelConfig  # noqa: E402
from avpipe.pipeline.chunks import dense  # noqa: E402

from .test_audio import clip_inputs  # noqa: E402


def lld_track(y: np.ndarray):  # noqa: ANN201
    """openSMILE's eGeMAPSv02 LLD frame table of a waveform, straight from the opensmile package."""
    import opensmile

    s = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                        feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    return s.process_signal(y, 16000)


def test_rows_are_the_mean_of_the_windows_lld_frames_and_mask_is_logmels(talking_head) -> None:
    v, inputs = clip_inputs(talking_head)
    r = dense(Egemaps().compute(v, inputs))
    n = talking_head.truth["n_frames"]
    assert r.data.shape == (n, 25) and r.mask.shape == (n,)
    assert r.attrs["feature_set"] == "eGeMAPSv02" and r.attrs["features"][0] == "Loudness_sma3"
    lm = dense(LogMel(LogMelConfig(window_s=1.0)).compute(v, inputs))
    np.testing.assert_array_equal(r.mask, lm.mask)  # same window, anchor and coverage rule
    assert r.mask.any() and (~r.mask).any() and (r.data[~r.mask] == 0).all()
    # independent: frame t's row = mean of the LLD rows whose start lies in [t, t + 1 s)
    df = lld_track(np.asarray(inputs["audio"].data, np.float32))
    starts = df.index.get_level_values("start").total_seconds().to_numpy()
    t = np.asarray(talking_head.truth["frame_times"])
    for i in np.flatnonzero(r.mask)[::7]:
        sel = (starts >= t[i] - 1e-6) & (starts < t[i] + 1.0 - 1e-6)
        want = np.zeros(25)
        want[:] = df.to_numpy()[sel].sum(0) / 100.0  # frames past the end count as zeros
        np.testing.assert_allclose(r.data[i], want, rtol=1e-4, atol=1e-4)


def test_loudness_rises_on_the_tone_rows(two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    r = dense(Egemaps(EgemapsConfig(anchor="centered", window_s=0.08)).compute(v, inputs))
    loud = r.data[:, 0]
    t = np.asarray(two_faces_tone.truth["frame_times"])
    on = (t >= 1.04) & (t <= 1.16)
    off = ((t < 0.9) | (t > 1.3)) & r.mask
    assert on.any() and off.any() and loud[on].min() > loud[off].max() + 0.5


@pytest.mark.parametrize("pool,dim", [("mean_std", 50), ("patch", 100 * 25)])
def test_pools_shape_and_consistency(talking_head, pool: str, dim: int) -> None:
    v, inputs = clip_inputs(talking_head)
    mean = dense(Egemaps().compute(v, inputs)).data
    r = dense(Egemaps(EgemapsConfig(pool=pool)).compute(v, inputs))
    assert r.data.shape[1] == dim
    if pool == "mean_std":
        np.testing.assert_allclose(r.data[:, :25], mean, atol=1e-5)
        assert r.attrs["features"][25] == "Loudness_sma3_std"
    else:
        np.testing.assert_allclose(r.data.reshape(len(r.data), 100, 25).mean(1), mean, atol=1e-4)


def test_functionals_are_88_and_follow_the_window(two_faces_tone) -> None:
    v, inputs = clip_inputs(two_faces_tone)
    r = dense(Egemaps(EgemapsConfig(level="functionals", window_s=0.4)).compute(v, inputs))
    assert r.data.shape == (two_faces_tone.truth["n_frames"], 88) and r.attrs["pool"] == "functionals"
    names = r.attrs["features"]
    loud = r.data[:, names.index("loudness_sma3_amean")]
    t = np.asarray(two_faces_tone.truth["frame_times"])
    hears = (t >= 0.8) & (t <= 1.0)                  # [t, t+0.4) holds the 1.0-1.2 s burst
    silent = ((t < 0.5) | (t > 1.3)) & r.mask
    assert hears.any() and silent.any() and loud[hears].min() > loud[silent].max() + 0.5


def test_no_audio_gives_masked_zero_rows(no_face_no_audio) -> None:
    v, inputs = clip_inputs(no_face_no_audio)
    r = dense(Egemaps().compute(v, inputs))
    assert r.data.shape == (no_face_no_audio.truth["n_frames"], 25)
    assert not r.mask.any() and not r.data.any() and r.attrs["present"] is False


def test_missing_opensmile_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr("avpipe.extractors.egemaps._config_dir", lambda: None)
    with pytest.raises(OpenSmileMissing, match=r"avpipe\[egemaps\]"):
        Egemaps().weights_id()


def test_fingerprint_follows_opensmile_version_and_semantic_options_only() -> None:
    from avpipe.pipeline.stage import Runtime

    a = Egemaps(EgemapsConfig(), Runtime(num_threads=1, batch_size=4))
    b = Egemaps(EgemapsConfig(), Runtime(num_threads=2, batch_size=64))
    assert a.weights_id() == b.weights_id() and a.weights_id().startswith("opensmile-2.6.0:")
    assert a.semantic_config() != Egemaps(EgemapsConfig(level="functionals")).semantic_config()
