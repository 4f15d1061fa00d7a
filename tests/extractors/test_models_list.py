"""`avpipe models list` names every backbone, timm-style: dimension, weights, licence, offline or not."""
from __future__ import annotations

import json

from click.testing import CliRunner

from avpipe.extractors.backbones import backbone_names, create_backbone
from avpipe.extractors.backbones.clips import CLIP_BACKBONES
from avpipe.cli.models import models


def test_every_backbone_is_listed_with_dim_weights_licence_and_offline() -> None:
    r = CliRunner().invoke(models, ["list", "--backbones", "--json"])
    assert r.exit_code == 0, r.output
    rows = {(x["stage"], x["name"]): x for x in json.loads(r.output)}
    assert {n for s, n in rows if s == "visual"} == set(backbone_names())
    assert {n for s, n in rows if s == "visual_clip"} == set(CLIP_BACKBONES)
    for (stage, name), row in rows.items():
        assert row["licence"], name
        if stage == "visual":
            assert row["dim"] == create_backbone(name).dim
    assert rows[("visual", "fer2013-mini-xception-emb")]["offline"] == "package index"
    assert rows[("visual", "hog")]["offline"].startswith("yes") and rows[("visual", "ir50")]["offline"] == "your file"
    assert rows[("visual", "swin-base")]["offline"] == "no (download)"
    assert rows[("visual_clip", "r2plus1d-18-kinetics400")]["dim"] == 512


def test_plain_list_shows_the_backbone_table_after_the_weights() -> None:
    r = CliRunner().invoke(models, ["list", "--no-checksums"])
    assert r.exit_code == 0
    head, _, tail = r.output.partition("STAGE")
    assert "SOURCE" in head and "BACKBONE" in tail and "i3d-imagenet-kinetics" in tail
