"""Paper presets on the training side: `train --fusion NAME` on a cache extracted with
`--config NAME` reads that preset's features under its configs; otherwise the old defaults."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from avpipe.cli import main
from avpipe.fusion.config import TrainConfig
from avpipe.fusion.source import CacheSource
from avpipe.fusion.prepare import prepare
from avpipe.pipeline.config import PipelineConfig, preset_names

MEDIA = Path(__file__).parents[1] / "fixtures" / "media"
PRESET = """[stages.logmel]
anchor = "causal"
window_frames = 32
pool = "mean_std"

[features]
audio = "logmel"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Three clips, logmel extracted with the defaults and with a paper-style preset; CSV labels."""
    root = tmp_path_factory.mktemp("presets")
    (root / "videos").mkdir()
    for name in ("talking_head.mp4", "two_faces_tone.mp4", "short_silent.mp4"):
        shutil.copy(MEDIA / name, root / "videos" / name)
    (root / "presets").mkdir()
    (root / "presets" / "audio.toml").write_text(PRESET)
    rows = ["video,frame,valence,arousal,split"]
    for i, name in enumerate(("talking_head", "two_faces_tone", "short_silent")):
        n = json.loads((MEDIA / f"{name}.json").read_text())["n_frames"]
        rows += [f"{name},{f},{0.1 * (f % 7) - 0.3:.2f},{0.05 * (f % 5):.2f},{'val' if i == 0 else 'train'}"
                 for f in range(n)]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    for cache, config in (("both", None), ("both", root / "presets" / "audio.toml"), ("default", None)):
        args = ["extract", "--videos", str(root / "videos"), "--cache", str(root / cache), "--stages", "logmel",
                "--no-progress", "--jobs", "1"]
        r = CliRunner().invoke(main, args + (["--config", str(config)] if config else []))
        assert r.exit_code == 0, r.output
    return root


def _prepare(root: Path, cache: str, **kw) -> TrainConfig:
    cfg = TrainConfig(fusion="audio", labels=str(root / "labels.csv"), cache=str(root / cache), **kw)
    prepare(cfg, CacheSource(cfg.cache))
    return cfg


def test_the_preset_named_like_the_model_picks_its_features(setup: Path, monkeypatch) -> None:
    monkeypatch.setattr("avpipe.pipeline.config.PRESET_DIR", setup / "presets")
    cfg = _prepare(setup, "both")
    want = CacheSource(str(setup / "both")).cache.resolve("logmel", PipelineConfig.load(setup / "presets" / "audio.toml"))
    default = CacheSource(str(setup / "both")).cache.resolve("logmel", None)
    assert want != default
    assert cfg.resolved_features["audio"] == {"stage": "logmel", "fingerprint": want}
    # explicit --features wins: the stage's default config
    cfg = _prepare(setup, "both", features={"audio": "logmel"})
    assert cfg.resolved_features["audio"]["fingerprint"] == default


def test_without_the_presets_entries_training_keeps_the_old_defaults(setup: Path, monkeypatch) -> None:
    monkeypatch.setattr("avpipe.pipeline.config.PRESET_DIR", setup / "presets")
    cfg = _prepare(setup, "default")
    assert cfg.resolved_features["audio"]["fingerprint"] == CacheSource(str(setup / "default")).cache.resolve("logmel")


def test_shipped_paper_presets_validate_and_name_features_for_their_models() -> None:
    from avpipe.fusion.models import get_model_class

    assert {"jca", "rja", "rjcma", "maven"} <= set(preset_names())
    for name in ("jca", "rja", "rjcma", "maven"):
        p = PipelineConfig.load(name)
        p.validate()
        assert set(get_model_class(name).required_modalities({})) <= set(p.features), name
    assert PipelineConfig.load("rjcma").features["audio"] == "vggish"
    assert PipelineConfig.load("rja").stages["visual_clip"]["backbone"] == "r2plus1d-18-kinetics400"


def test_a_features_table_naming_an_unknown_stage_is_a_config_error(tmp_path: Path) -> None:
    from avpipe.pipeline.config_schema import ConfigError

    p = tmp_path / "c.toml"
    p.write_text('[features]\naudio = "logmell"\n')
    with pytest.raises(ConfigError, match="logmell"):
        PipelineConfig.load(p).validate()
