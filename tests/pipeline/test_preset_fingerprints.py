"""Every shipped preset's fingerprints, pinned before the architecture refactor (#18): moving
registries, modules and the command line must not move one stored fingerprint.

Moved once on purpose since: #24 made O-net tracking the ``faces`` default (``faces``, and
``visual``/``visual_clip`` downstream of it, in every preset)."""
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
        'faces': '831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'dc95655134622c2e0264e1b3e110415b88caac499cb05a84f852daff99241c5b',
        'visual_clip': '433b4193dc61f9cd8b8dc9a614b28f87635b58536ac63a87015e3f5bb1e57451',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'jca': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': '831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': '3b6b29830e1b3a71965b8222283e3b63637d4171518d35cb33b66d97c50666c5',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'dc95655134622c2e0264e1b3e110415b88caac499cb05a84f852daff99241c5b',
        'visual_clip': '852623a5fa7d40d177cded7db651638f19aaee82113f7496e2a1916a3c057314',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'maven': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': '831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'ae9c3044d5e8e0b4e0387ee7a2150a0154a9f964dc892c86cf2ba42d7ecc914c',
        'visual_clip': '433b4193dc61f9cd8b8dc9a614b28f87635b58536ac63a87015e3f5bb1e57451',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': 'bcce5a0e1b4207a1a23eca333f0a67a87c81b203b3064ee7cceaeb6a22a1d72f',
    },
    'offline': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': '831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': '7355e7f7e05697dbc62515a8f459d566320a212f61696f039da0ed4bd437adba',
        'visual_clip': '433b4193dc61f9cd8b8dc9a614b28f87635b58536ac63a87015e3f5bb1e57451',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'rja': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': '831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': '3b6b29830e1b3a71965b8222283e3b63637d4171518d35cb33b66d97c50666c5',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'dc95655134622c2e0264e1b3e110415b88caac499cb05a84f852daff99241c5b',
        'visual_clip': 'ffa9c77b3cb62c291b62c5127f07bce8dbeb2222016b8a38991171e135eddfdb',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'rjcma': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': '831e0d173fe0b066bc339483d7376c0d9f68afc4b08497d005083934c8ab923e',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'bebd486fbf4a08b3a478f7b578b725de8969122e9d01322f1ef585bb190b2cba',
        'visual_clip': '433b4193dc61f9cd8b8dc9a614b28f87635b58536ac63a87015e3f5bb1e57451',
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
