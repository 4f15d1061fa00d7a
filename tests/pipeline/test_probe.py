from __future__ import annotations

import shutil

import numpy as np
import pytest

from avpipe.pipeline.probe import Probe
from avpipe.pipeline.stage import StageError, VideoRef
from tests.media import make_audio_only, make_clip, truncate


def _probe(path, key="v.mp4"):
    return Probe().compute(VideoRef(key, "cid", path), {})


def test_timestamps_and_attrs(tmp_path):
    r = _probe(make_clip(tmp_path / "a.mp4", seconds=2, fps=10, audio=True, codec="libx264"))
    assert r.data.dtype == np.float64 and r.data.shape == (20,)
    np.testing.assert_allclose(r.data, np.arange(20) / 10, atol=1e-6)
    a = r.attrs
    assert (a["n_frames"], a["width"], a["height"], a["fps"]) == (20, 64, 48, 10.0)
    assert a["has_audio"] and a["audio_sample_rate"] == 16000 and a["audio_channels"] == 1
    assert a["video_codec"] == "h264" and a["audio_codec"] == "aac"
    assert abs(a["duration"] - 2.0) < 0.1 and "mp4" in a["container"]


def test_no_audio_is_not_an_error(tmp_path):
    r = _probe(make_clip(tmp_path / "a.mp4", seconds=1))
    assert r.attrs["has_audio"] is False and r.attrs["audio_codec"] is None
    assert len(r.data) == 10


@pytest.mark.parametrize("kind,expect", [
    ("empty", "empty file"),
    ("text", "not a readable media file"),
    ("truncated", "truncated"),
    ("audio_only", "no video stream"),
])
def test_bad_inputs_give_clear_errors(tmp_path, clip_bank, kind, expect):
    p = tmp_path / "bad.mp4"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a video\n" * 20)
    elif kind == "truncated":
        shutil.copy(clip_bank / "c0.mp4", p)
        truncate(p, 0.5)
    else:
        make_audio_only(p)
    with pytest.raises(StageError, match=expect) as ei:
        _probe(p, key="dir/bad.mp4")
    assert "dir/bad.mp4" in str(ei.value)


# -- edit lists: count what a player shows -------------------------------------------------------
def _encode(path, *, codec="libx264", n=30, fps=10, first_pts=0, pts=None, tick=None, fmt=None,
            options=None, fmt_options=None):
    """Encode ``n`` frames with explicit pts in ticks of ``tick`` s (default 1/fps);
    ``first_pts`` < 0 makes the mp4/mov muxer write an edit list that cuts the frames before 0,
    as an editor's trim or a phone export does."""
    import av
    from fractions import Fraction

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    pts = list(range(first_pts, first_pts + n)) if pts is None else pts
    with av.open(str(path), "w", format=fmt, options=fmt_options or {}) as out:
        vs = out.add_stream(codec, rate=fps, options=options or {})
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.codec_context.time_base = tick or Fraction(1, fps)
        for i, p in enumerate(pts):
            fr = av.VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="rgb24")
            fr.pts, fr.time_base = p, vs.codec_context.time_base
            for pkt in vs.encode(fr):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


def _player_frames(path):
    """The reference: decode and count what comes out (and at which times)."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [float(f.pts * vs.time_base) for f in c.decode(vs)]


def _has_edit_list(path):
    import av

    with av.open(str(path)) as c:
        discarded = sum(1 for p in c.demux(c.streams.video[0]) if p.size and p.is_discard)
    return b"elst" in path.read_bytes(), discarded


@pytest.mark.parametrize("codec,options", [("libx264", {"bf": "2"}), ("libx264", {}), ("mpeg4", {})])
def test_mp4_with_an_edit_list_probes_to_what_a_player_shows(tmp_path, codec, options):
    p = _encode(tmp_path / "trimmed.mp4", codec=codec, options=options, first_pts=-3, n=98)
    elst, _ = _has_edit_list(p)
    shown = _player_frames(p)
    assert elst and len(shown) == 95  # the file declares 98 frames, a player shows 95
    r = _probe(p)
    assert r.attrs["n_frames"] == len(shown) == len(r.data)
    np.testing.assert_allclose(r.data, np.asarray(shown) - shown[0], atol=1e-6)


def test_hevc_vfr_mov_with_b_frames_and_an_edit_list(tmp_path):
    import av

    try:
        av.codec.Codec("libx265", "w")
    except Exception:
        pytest.skip("this PyAV build has no HEVC encoder")
    # variable frame rate: gaps of 0.1, 0.2 and 0.3 s; starts before 0 (edit list)
    steps = np.resize([10, 20, 30, 10], 40)
    pts = (np.cumsum(steps) - 60).tolist()
    from fractions import Fraction

    p = _encode(tmp_path / "phone.mov", codec="libx265", pts=pts, tick=Fraction(1, 100), fps=10, fmt="mov",
                options={"x265-params": "log-level=error:bframes=3"})
    elst, discarded = _has_edit_list(p)
    shown = _player_frames(p)
    assert elst and discarded > 0 and len(shown) < len(pts)
    r = _probe(p)
    assert r.attrs["n_frames"] == len(shown) and r.attrs["video_codec"] == "hevc"
    np.testing.assert_allclose(r.data, np.asarray(shown) - shown[0], atol=1e-6)
    assert len(set(np.round(np.diff(r.data), 3))) == 3  # the VFR gaps survive


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_faststart_mp4_cut_mid_file_is_still_truncated(tmp_path, keep):
    p = _encode(tmp_path / "fs.mp4", n=60, fmt_options={"movflags": "faststart"})
    truncate(p, keep)
    with pytest.raises(StageError, match="truncated"):
        _probe(p)


def test_faststart_mp4_cut_on_a_packet_boundary_is_still_truncated(tmp_path):
    """No partial packet, no decode error: only the frames ending long before the declared
    duration tell — and they must."""
    import av

    p = _encode(tmp_path / "fs.mp4", n=60, fmt_options={"movflags": "faststart"})
    with av.open(str(p)) as c:
        pk = [(x.pos, x.size) for x in c.demux(c.streams.video[0]) if x.size]
    pos, size = pk[20]
    p.write_bytes(p.read_bytes()[: pos + size])
    with pytest.raises(StageError, match="truncated: its frames end at"):
        _probe(p)
