"""Typed configs: coercion to one canonical value, range checks, one clear message per bad value,
and default fingerprints unchanged by the move to validated configs."""
from __future__ import annotations

import dataclasses
import pickle

import pytest

from avpipe.pipeline.config_schema import ConfigError, canonical_json, load_config_file
from avpipe.pipeline.fingerprint import stage_fingerprint
from avpipe.pipeline.config import PipelineConfig
from avpipe.pipeline.stage import get_stage_class, topological_order

BUILTIN = ("probe", "audio", "asr", "faces", "logmel", "text", "vggish", "visual")

# Computed on the code before configs were typed (plain dataclasses, no coercion). The canonical
# config of every stage's defaults — and so every existing cache fingerprint — must not move.
OLD_CANONICAL = {
    "probe": "{}",
    "audio": '{"stream":0}',
    "asr": '{"beam_size":null,"condition_on_previous_text":true,"language":null,"model":"tiny.en",'
           '"silence_rms":0.0001,"temperature":0.0,"trim_silence":true}',
    # #24: O-net tracking by default, anchored by the key frame's cascade (FACES_WINDOW below is the
    # window cascade's, version 4's key; FACES_ONET_V1 the first O-net default's)
    "faces": '{"crop_size":112,"detect_max_side":640,"factor":0.709,"key_interval":30,"max_tracks":4,'
             '"min_face_size":20,"roi_max_face":2.0,"roi_min_face":0.5,"roi_onet_top_k":null,"roi_rnet_top_k":null,'
             '"roi_scale":2.0,"template":"arcface","thresholds":[0.6,0.7,0.7],"track_max_gap":75,'
             '"track_min_frames":10,"track_min_iou":0.3,"track_onet_inputs":4,"track_onet_key_anchor":true,'
             '"track_onet_min_prob":0.9,"track_onet_refresh":4,"track_onet_smooth":2,"track_onet_temperature":3.0}',
    "logmel": '{"anchor":"forward","fmax":7500.0,"fmin":125.0,"hop_s":0.01,"log_offset":0.01,"min_coverage":0.5,'
              '"n_fft":512,"n_mels":64,"pool":"mean","win_s":0.025,"window_frames":0,"window_s":0.96}',
    "text": '{"hold_gap_s":0.0,"max_tokens":256,"max_word_s":2.0,"min_word_prob":0.2,"model":"minilm","normalize":true}',
    "vggish": '{"anchor":"forward","pca":false,"quantize":false}',
    "visual": '{"backbone":"facenet-vggface2"}',
}
# ``faces`` with track_onet_inputs = 0: the default before #24, so caches made then stay valid
FACES_WINDOW = ('{"crop_size":112,"detect_max_side":640,"factor":0.709,"key_interval":30,"max_tracks":4,'
                '"min_face_size":20,"roi_max_face":2.0,"roi_min_face":0.5,"roi_onet_top_k":null,'
                '"roi_rnet_top_k":null,"roi_scale":2.0,"template":"arcface","thresholds":[0.6,0.7,0.7],'
                '"track_max_gap":75,"track_min_frames":10,"track_min_iou":0.3}')
FACES_WINDOW_FINGERPRINT = "dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8"  # v4
# ``faces`` with track_onet_key_anchor = false: the first O-net tracking default (#24, stop 28)
FACES_ONET_V1_FINGERPRINT = "831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e"
# Fingerprints of the default graph with every weights id replaced by "W" (old code).
OLD_FINGERPRINTS = {
    "probe": "750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798",
    "audio": "37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0",
    "asr": "4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685",  # v2: language + confidence attrs
    "faces": "cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6",  # #24: O-net tracking
    "logmel": "b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747",
    "text": "931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7",  # v2: word-confidence masking
    "vggish": "9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e",
    "visual": "da43419451c6c80228f1e0609429dd8752eec5cdfeb0a60f26b296427e4ef06f",  # faces moved (#24)
}
# window/hop/patience/clip_len default to the model's own (published models by name);
# feature_configs (#22): the stage configs behind resolved_features, written by the trainer
# The trainer's defaults since the published names train with their authors' recipes: the new keys
# (recipe, windows, shuffle, drop_last, step_peak_lr, selection, input_norm, init) and grad_clip/loss
# unset (filled in from the recipe).
OLD_TRAIN_CANONICAL = (
    '{"amp":"auto","aux_losses":null,"batch_size":null,"cache":"cache","clip_labels":false,"clip_len":nul'
    'l,"device":"auto","drop_last":null,"epochs":null,"eval_hop":null,"feature_configs":{},"feature_dtype'
    '":"auto","features":{},"fusion":"jca","grad_clip":null,"hop":null,"init":null,"input_norm":null,"lab'
    'el_tolerance":10,"labels":"","loss":null,"lr":null,"memory_budget_gb":null,"min_lr":1e-08,"model":{}'
    ',"num_threads":null,"optimizer":null,"out":"","patience":null,"plateau_factor":0.1,"plateau_patience'
    '":5,"plot_videos":3,"recipe":null,"resolved_features":{},"schedule":null,"seed":0,"selection":null,"'
    'shuffle":null,"smoothing":[20,50],"split_file":null,"step_every":2,"step_gamma":0.8,"step_peak_lr":n'
    'ull,"step_start":5,"val_fraction":0.15,"warmup_epochs":null,"weight_decay":null,"window":null,"windo'
    'ws":null}'
)


def _fingerprints(config: PipelineConfig) -> dict[str, str]:
    """The built-in graph's fingerprints for ``config`` with a fixed weights id (no weights needed)."""
    fps: dict[str, str] = {}
    for name in topological_order(list(BUILTIN)):
        stage = get_stage_class(name)(config.stage_config(name))
        stage.weights_id = lambda: "W"  # type: ignore[method-assign]
        fps[name] = stage_fingerprint(stage, fps).value
    return fps


def _error(config: dict) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        PipelineConfig.from_dict({"stages": config}).validate()
    return ei.value


# -- canonical form and fingerprints -----------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_default_canonical_config_is_unchanged(name):
    stage = get_stage_class(name)()
    assert canonical_json(stage.semantic_config()) == OLD_CANONICAL[name]


def test_default_fingerprints_are_unchanged():
    assert _fingerprints(PipelineConfig()) == OLD_FINGERPRINTS


def test_window_cascade_faces_keeps_the_key_of_before_onet_tracking():
    """``track_onet_inputs = 0`` is the earlier default's output, so it must find that cache."""
    cfg = PipelineConfig({"faces": {"track_onet_inputs": 0}})
    assert canonical_json(get_stage_class("faces")(cfg.stage_config("faces")).semantic_config()) == FACES_WINDOW
    assert _fingerprints(cfg)["faces"] == FACES_WINDOW_FINGERPRINT


def test_unanchored_onet_tracking_keeps_the_key_of_the_first_onet_default():
    """``track_onet_key_anchor = false`` is the first O-net tracking default's output (the next
    frame after a key frame runs the window cascade), so it must find that cache."""
    cfg = PipelineConfig({"faces": {"track_onet_key_anchor": False}})
    canonical = canonical_json(get_stage_class("faces")(cfg.stage_config("faces")).semantic_config())
    assert canonical == OLD_CANONICAL["faces"].replace('"track_onet_key_anchor":true,', "")
    assert _fingerprints(cfg)["faces"] == FACES_ONET_V1_FINGERPRINT


def test_default_train_config_is_unchanged():
    from avpipe.fusion.config import TrainConfig

    assert canonical_json(TrainConfig()) == OLD_TRAIN_CANONICAL


@pytest.mark.parametrize("value", [64, 64.0, "64", " 64 "])
def test_one_value_one_fingerprint(value):
    """``n_mels = 64``, ``64.0`` and ``"64"`` are one config: same canonical form, same cache key."""
    cfg = PipelineConfig({"logmel": {"n_mels": value}})
    assert cfg.stage_config("logmel").n_mels == 64 and type(cfg.stage_config("logmel").n_mels) is int
    assert _fingerprints(cfg)["logmel"] == OLD_FINGERPRINTS["logmel"]


def test_int_written_for_a_float_option_is_the_same_config():
    cfg = PipelineConfig({"logmel": {"fmin": 125, "window_s": "0.96"}, "faces": {"thresholds": [0.6, 0.7, 0.7]}})
    assert canonical_json(cfg.stage_config("logmel")) == OLD_CANONICAL["logmel"]
    assert _fingerprints(cfg) == OLD_FINGERPRINTS


def test_fractional_int_is_refused():
    e = _error({"logmel": {"n_mels": 64.5}})
    assert str(e) == "[stages.logmel] n_mels = 64.5: must be a whole number"


# -- the reproductions: one clear message per bad value ----------------------------------------
def test_faces_key_interval_zero():
    assert str(_error({"faces": {"key_interval": 0}})) == "[stages.faces] key_interval = 0: must be >= 1"


def test_visual_backbone_checked_against_registry():
    e = _error({"visual": {"backbone": "resnet"}})
    assert str(e).startswith('[stages.visual] backbone = "resnet": unknown backbone; known: ')
    assert "facenet-vggface2" in str(e) and "hog" in str(e)


@pytest.mark.parametrize("key,value,allowed", [("anchor", "forwrd", "'forward', 'causal' or 'centered'"),
                                               ("pool", "max", "'mean', 'mean_std' or 'patch'")])
def test_logmel_closed_sets_checked_before_any_video(key, value, allowed):
    """Before: accepted by the config, failed per video at compute time and recorded as sticky."""
    e = _error({"logmel": {key: value}})
    assert str(e) == f'[stages.logmel] {key} = "{value}": must be one of {allowed}'


@pytest.mark.parametrize("stage,options,expected", [
    ("faces", {"thresholds": [0.6, 1.5, 0.7]}, "thresholds = [0.6, 1.5, 0.7]: item 1: must be <= 1.0"),
    ("faces", {"factor": 1.0}, "factor = 1.0: must be < 1.0"),
    ("faces", {"template": "dlib"}, "template = \"dlib\": must be one of 'arcface'"),
    ("logmel", {"n_mels": 0}, "n_mels = 0: must be > 0"),
    ("logmel", {"min_coverage": 1.5}, "min_coverage = 1.5: must be <= 1.0"),
    ("logmel", {"fmax": 9000}, "fmax = 9000: must be <= 8000.0"),
    ("vggish", {"anchor": "later"}, "anchor = \"later\": must be one of 'forward', 'causal' or 'centered'"),
    ("vggish", {"pca": "maybe"}, "pca = \"maybe\": must be true or false"),
    ("audio", {"stream": -1}, "stream = -1: must be >= 0"),
    ("asr", {"beam_size": 0}, "beam_size = 0: must be >= 1"),
    ("text", {"max_tokens": "many"}, "max_tokens = \"many\": must be an integer"),
    ("faces", {"key_interval": True}, "key_interval = true: must be a number, not true/false"),
])
def test_range_and_type_checks(stage, options, expected):
    assert str(_error({stage: options})) == f"[stages.{stage}] {expected}"


def test_cross_field_check():
    e = _error({"logmel": {"fmin": 8000, "fmax": 7000}})
    assert str(e) == "[stages.logmel]: fmin (8000.0) must be below fmax (7000.0)"


def test_unknown_keys_and_stages_remain_errors_all_reported_at_once():
    e = _error({"faces": {"key_intervall": 5, "crop_size": 8}, "facez": {}})
    lines = e.lines
    assert lines[0].startswith("[stages.facez]: unknown stage; known stages: ")
    assert lines[1].startswith("[stages.faces] key_intervall = 5: unknown option (did you mean key_interval?); "
                               "valid options: crop_size, ")
    assert lines[2] == "[stages.faces] crop_size = 8: must be >= 16"
    assert len(lines) == 3


def test_python_construction_and_assignment_are_checked():
    from avpipe.extractors.faces import FacesConfig
    from avpipe.extractors.logmel import LogMelConfig

    with pytest.raises(ConfigError, match=r"^\[FacesConfig\] key_interval = 0: must be >= 1$"):
        FacesConfig(key_interval=0)
    c = LogMelConfig(n_mels="32", fmin=100)
    assert (c.n_mels, c.fmin) == (32, 100.0) and isinstance(c.fmin, float)
    with pytest.raises(ConfigError, match="pool"):
        c.pool = "max"
    with pytest.raises(ConfigError, match="n_mels"):
        dataclasses.replace(c, n_mels=-1)
    assert pickle.loads(pickle.dumps(c)) == c  # configs travel to worker processes


def test_plain_dataclass_configs_of_plugins_are_coerced_too(toy_stages):
    """A plugin's config may be a plain dataclass: it is checked against its annotations as well."""
    a = PipelineConfig({"toy_a": {"scale": "2"}}).stage_config("toy_a")
    assert a.scale == 2.0 and isinstance(a.scale, float)
    assert canonical_json(a) == canonical_json(toy_stages.AConfig(2.0))
    with pytest.raises(ConfigError, match=r'^\[stages.toy_a\] scale = "big": must be a number$'):
        PipelineConfig({"toy_a": {"scale": "big"}}).validate()


def test_section_must_be_a_table():
    with pytest.raises(ConfigError, match=r"\[stages.faces\]: must be a table of options"):
        PipelineConfig.from_dict({"stages": {"faces": 3}})


def test_config_files(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text("[stages.logmel]\nn_mels = 64.0\n")
    assert _fingerprints(PipelineConfig.load(p))["logmel"] == OLD_FINGERPRINTS["logmel"]
    p.write_text("[stages.logmel\nn_mels = 64\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(p)
    with pytest.raises(ConfigError, match="config file not found") as ei:
        load_config_file(tmp_path / "missing.toml")
    assert isinstance(ei.value, FileNotFoundError)  # callers that expect one still get one
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="top level"):
        load_config_file(tmp_path / "list.json")


def test_every_builtin_option_has_help():
    from avpipe.fusion.config import TrainConfig
    from avpipe.pipeline.config_schema import option_help

    classes = [get_stage_class(n).config_cls for n in BUILTIN if n != "probe"] + [TrainConfig]
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if not option_help(c, f.name)]
    assert missing == []


# -- the trainer's config ----------------------------------------------------------------------
def test_train_config_checked():
    from avpipe.fusion.config import TrainConfig

    with pytest.raises(ConfigError) as ei:
        TrainConfig.from_dict({"epochz": 3, "lr": "fast", "schedule": "cosine", "epochs": "7"})
    assert ei.value.lines[0].startswith("[train] epochz = 3: unknown option (did you mean epochs?)")
    assert ei.value.lines[1] == '[train] lr = "fast": must be a number'
    assert ei.value.lines[2] == ("[train] schedule = \"cosine\": must be one of 'step', 'plateau', "
                                 "'warmup_plateau', 'none', 'praveen_av', 'rjcma_warmup' or 'plateau_loss'")
    assert TrainConfig.from_dict({"epochs": "7", "lr": 1}).epochs == 7
    cfg = TrainConfig()
    with pytest.raises(ConfigError) as ei:
        cfg.batch_size = 0
    assert str(ei.value.from_flags({"batch_size": "--batch-size"})) == "--batch-size 0: must be >= 1"


def test_train_config_round_trip(tmp_path):
    from avpipe.fusion.config import TrainConfig

    cfg = TrainConfig(fusion="maven", smoothing=["10", 20], aux_losses={"polar": 1})
    cfg.save(tmp_path / "c.json")
    back = TrainConfig.load(tmp_path / "c.json")
    assert back == cfg and back.smoothing == [10, 20] and back.aux_losses == {"polar": 1.0}
