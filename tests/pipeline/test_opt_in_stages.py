"""Stages added for the papers (3D CNN clips, speech encoders, openSMILE) run only when asked for:
a plain `avpipe extract` plans what it planned before; a paper preset plans its own features."""
from __future__ import annotations

from avpipe.pipeline.plan import config_stages, select_stages
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.stage import default_stage_names, stage_registry

BEFORE = ["probe", "audio", "faces", "asr", "logmel", "vggish", "visual", "text"]  # the built-ins until #21


def test_a_plain_extract_plans_the_same_stages_as_before() -> None:
    opt_in = {n for n, c in stage_registry().items() if c.opt_in}
    planned = select_stages(None)[0]
    builtin = [n for n in planned if stage_registry()[n].__module__.startswith(("avpipe.extractors", "avpipe.pipeline"))]
    assert builtin == BEFORE and not opt_in & set(planned)  # (test plugins registered by other tests may add theirs)
    assert {"visual_clip", "speech", "speech_segments", "egemaps"} <= opt_in
    assert not opt_in & set(default_stage_names())


def test_named_opt_in_stages_run_with_what_they_need() -> None:
    assert select_stages(["visual_clip"])[0] == ["probe", "faces", "visual_clip"]
    assert select_stages(["speech_segments"])[0] == ["probe", "audio", "asr", "speech_segments"]


def test_a_paper_preset_without_stages_plans_its_features() -> None:
    assert select_stages(config_stages(PipelineConfig.load("rja")))[0] == ["probe", "audio", "faces", "logmel",
                                                                        "visual_clip"]
    assert "speech_segments" in select_stages(config_stages(PipelineConfig.load("maven")))[0]
    assert config_stages(PipelineConfig.load("offline")) is None  # no [features]: the default stages
