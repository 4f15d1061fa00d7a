"""Every shipped preset's fingerprints, pinned before the architecture refactor (#18): moving
registries, modules and the command line must not move one stored fingerprint.

Moved on purpose since, twice by #24 (``faces``, and ``visual``/``visual_clip`` downstream of it,
in every preset): O-net tracking became the ``faces`` default, then the key frame's own cascade
began anchoring it (``track_onet_key_anchor``)."""
from __future__ import annotations

import pytest

from avpipe.pipeline.fingerprint import stage_fingerprint
from avpipe.pipeline.config import PipelineConfig, preset_names
from avpipe.pipeline.stage import get_stage_class, topological_order

PINNED = {
    # preset -> stage -> fingerprint, every weights id replaced by "W"
    'default': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'da43419451c6c80228f1e0609429dd8752eec5cdfeb0a60f26b296427e4ef06f',
        'visual_clip': '4f1e92a9a279f1120cb193d183cd2119df206fb1c296e5e8ab9cfd7a95c96bb0',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'jca': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': '3b6b29830e1b3a71965b8222283e3b63637d4171518d35cb33b66d97c50666c5',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'da43419451c6c80228f1e0609429dd8752eec5cdfeb0a60f26b296427e4ef06f',
        'visual_clip': 'ac1dd8d670d55150c7aa6df67844aecf0b250b3e0d628f3549ecb48b266b59a5',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'maven': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': '9c9db967596258f4ec97bb8131e9e6fe26aeee002aa932367f27b6ff93e4eda2',
        'visual_clip': '4f1e92a9a279f1120cb193d183cd2119df206fb1c296e5e8ab9cfd7a95c96bb0',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': 'bcce5a0e1b4207a1a23eca333f0a67a87c81b203b3064ee7cceaeb6a22a1d72f',
    },
    'offline': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': '6f5eeac96fef34d412c8d1df8f3774dddfbbe3fd219a3efd36b280e2ec361087',
        'visual_clip': '4f1e92a9a279f1120cb193d183cd2119df206fb1c296e5e8ab9cfd7a95c96bb0',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'rja': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': '3b6b29830e1b3a71965b8222283e3b63637d4171518d35cb33b66d97c50666c5',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'da43419451c6c80228f1e0609429dd8752eec5cdfeb0a60f26b296427e4ef06f',
        'visual_clip': 'cd1eb9784be0ba31093dcdaa810026de771fd1785ac324e7aebfadc1a2c3e3d6',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'rjcma': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'cc7a74c3b603ffa3d0c9a22817f7f11c9d51e8983eba51e54f38e00875e3add6',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': '4f3a6a1da9ed1af3cb08bf84dd34458b1788b9140af10c14d96162ee72aa37a4',
        'visual_clip': '4f1e92a9a279f1120cb193d183cd2119df206fb1c296e5e8ab9cfd7a95c96bb0',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': 'a6fccaeb18f53f536baa1b994cc63bfc807db6144363d2600b28482f6a819c8d',
    },
}


def _fingerprints(config: PipelineConfig) -> dict[str, str]:
    fps: dict[str, str] = {}
    for name in topological_order(sorted(PINNED["default"])):
        stage = get_stage_class(name)(config.stage_config(name))
        stage.weights_id = lambda: "W"  # type: ignore[method-assign]
        fps[name] = stage_fingerprint(stage, fps).value
    return fps


@pytest.mark.parametrize("preset", ["default", *sorted(PINNED.keys() - {"default"})])
def test_preset_fingerprints_are_pinned(preset: str) -> None:
    config = PipelineConfig() if preset == "default" else PipelineConfig.load(preset)
    assert _fingerprints(config) == PINNED[preset]


def test_every_shipped_preset_is_pinned() -> None:
    assert set(preset_names()) | {"default"} == set(PINNED)
