"""docs/extending.md's recipe works: a new stage, backbone or fusion model is one module plus one
registry line (``REGISTRY.register(name, "module:Class")``, the same call a built-in table line
makes), and is then listed, validated and built like a built-in — without its module being
imported to list or validate its name."""
from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avpipe.extractors.backbones.base import BACKBONES, backbone_names, create_backbone
from avpipe.fusion.models import MODELS
from avpipe.pipeline.config_schema import ConfigError
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.stage import STAGES, stage_registry, topological_order


@pytest.fixture
def toy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[callable]:
    """Write ``name.py`` on a temporary sys.path entry; its registrations are undone afterwards."""
    made: list[tuple[object, str]] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, body: str, registry: object, entry: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        monkeypatch.delitem(sys.modules, name, raising=False)
        made.append((registry, entry))
        return name

    yield write
    for registry, entry in made:
        registry.unregister(entry)


def test_a_new_stage_is_one_module_and_one_line(toy_module):
    mod = toy_module("ext_toy_stage", """
        from avpipe.pipeline.config_schema import config_dataclass
        from avpipe.pipeline.stage import Stage, StageResult, register_stage


        @config_dataclass
        class ToyExtConfig:
            scale: float = 1.0


        @register_stage
        class ToyExt(Stage):
            name = "toy_ext"
            version = "1"
            config_cls = ToyExtConfig
            requires = ("audio",)

            def compute(self, video, inputs):
                return StageResult(data=inputs["probe"].timestamps[:, None] * self.config.scale)
    """, STAGES, "toy_ext")
    STAGES.register("toy_ext", f"{mod}:ToyExt")  # the one line (a line of BUILTIN_STAGES for a built-in)
    assert "toy_ext" in STAGES.names() and mod not in sys.modules
    assert stage_registry()["toy_ext"].__module__ == mod
    assert topological_order(["toy_ext"]) == ["probe", "audio", "toy_ext"]
    PipelineConfig({"toy_ext": {"scale": 2}}).validate()
    with pytest.raises(ConfigError, match="stages.toy_ext"):
        PipelineConfig({"toy_ext": {"scale": "big"}}).validate()


def test_a_new_backbone_is_one_module_and_one_line(toy_module):
    mod = toy_module("ext_toy_backbone", """
        import numpy as np

        from avpipe.extractors.backbones.base import Backbone, register_backbone


        @register_backbone
        class ToyBackbone(Backbone):
            name = "toy-bb"
            dim = 3
            licence = "MIT"

            def embed(self, crops):
                return crops.reshape(len(crops), -1)[:, :3].astype(np.float32)
    """, BACKBONES, "toy-bb")
    BACKBONES.register("toy-bb", f"{mod}:ToyBackbone")
    assert "toy-bb" in backbone_names() and mod not in sys.modules
    from avpipe.extractors.visual import VisualConfig

    assert VisualConfig(backbone="toy-bb").backbone == "toy-bb"  # the visual stage's option accepts it
    with pytest.raises(ValueError, match="unknown backbone"):
        VisualConfig(backbone="toy-bbb")
    out = create_backbone("toy-bb").embed(np.ones((2, 4, 4, 3), np.uint8))
    assert out.shape == (2, 3) and BACKBONES.metadata("toy-bb")["licence"] == "MIT"
    from avpipe.cli.models import models

    r = CliRunner().invoke(models, ["list", "--backbones", "--json"])
    assert r.exit_code == 0 and '"toy-bb"' in r.output


def test_a_new_fusion_model_is_one_module_and_one_line(toy_module):
    pytest.importorskip("torch")
    mod = toy_module("ext_toy_fusion", """
        import torch

        from avpipe.fusion.models import register_model
        from avpipe.fusion.models.base import FusionModel, ModelInfo


        @register_model
        class ToyFusion(FusionModel):
            name = "toy-fusion"
            modalities = ("visual",)
            info = ModelInfo(paper="none", code="n/a", ours="a linear map", summary="test model")

            def __init__(self, dims, window, clip_len=1):
                super().__init__(dims, window, clip_len)
                self.lin = torch.nn.Linear(self.dims["visual"], 2)

            def fuse(self, x, mask):
                return self.lin(x["visual"])
    """, MODELS, "toy-fusion")
    MODELS.register("toy-fusion", f"{mod}:ToyFusion")
    assert mod not in sys.modules
    from avpipe.cli.train import train_cmd

    fusion = next(p for p in train_cmd.params if p.name == "fusion")
    assert fusion.type.convert("toy-fusion", fusion, None) == "toy-fusion"  # --fusion accepts it
    assert mod not in sys.modules
    r = CliRunner().invoke(train_cmd, ["--fusion", "toy-fusio", "--labels", "."])
    assert r.exit_code == 2 and "did you mean 'toy-fusion'" in r.output
    from avpipe.fusion.models import create_model

    import torch

    y = create_model("toy-fusion", dims={"visual": 5}, window=4)({"visual": torch.zeros(1, 4, 5)},
                                                                  {"visual": torch.ones(1, 4, dtype=torch.bool)})
    assert y.shape == (1, 4, 2)
    r = CliRunner().invoke(train_cmd, ["--list"])
    assert r.exit_code == 0 and any(ln.startswith("toy-fusion ") and "test model" in ln for ln in r.output.splitlines())
