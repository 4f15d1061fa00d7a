"""Every shipped preset's fingerprints, pinned before the architecture refactor (#18): moving
registries, modules and the command line must not move one stored fingerprint."""
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
        'faces': 'dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'a364b4741b5a55075f37a518e9311186aa09892683f1ccbeb78b35d12488323a',
        'visual_clip': 'dd7ac775c413017dd05d1572d0811c7e4c9319b0296ea734959e3b168da3457c',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'jca': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': '3b6b29830e1b3a71965b8222283e3b63637d4171518d35cb33b66d97c50666c5',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'a364b4741b5a55075f37a518e9311186aa09892683f1ccbeb78b35d12488323a',
        'visual_clip': 'e8521aa39db8e5c488d4435f94cf1351c9e768603dbc119fbf97d1ceaf8e1bcc',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'maven': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': '003fb94f464c2593427519219ff321ffef6830cd01a956feee23e08853a48a95',
        'visual_clip': 'dd7ac775c413017dd05d1572d0811c7e4c9319b0296ea734959e3b168da3457c',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': 'bcce5a0e1b4207a1a23eca333f0a67a87c81b203b3064ee7cceaeb6a22a1d72f',
    },
    'offline': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'c1e6f86bcfeadbc1afa713b4d251db022dac025e6442cb457f5fd08618ad78db',
        'visual_clip': 'dd7ac775c413017dd05d1572d0811c7e4c9319b0296ea734959e3b168da3457c',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'rja': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': '3b6b29830e1b3a71965b8222283e3b63637d4171518d35cb33b66d97c50666c5',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': 'a364b4741b5a55075f37a518e9311186aa09892683f1ccbeb78b35d12488323a',
        'visual_clip': '332bc4e1a266fd3d2b70f4b5f7c06b7732631aeb0eac3715f3fd44348979a66e',
        'speech_segments': 'e65db6a3fa6ec77e21cb0c41b6e4b2e8544a0551f9124c1e142128e4a5c22d2e',
        'text': '931b6c0d062ab10d0e5ad7be642c07449100984a9ce4117e17ccdf988cdf8dc7',
    },
    'rjcma': {
        'probe': '750f73113c9d59445adf61ed667fe729cea26bba7332f2b8d5c5be46e6e6c798',
        'audio': '37926a8b8965bf8ffe9f08ac759b6ee91b08cf6a321b6649e982a2b3a1027ce0',
        'faces': 'dc318cb8c850d02daa414736e6e59a7f8e1ec559f5cf837d86f374088cd1e3d8',
        'asr': '4af0ade5dbc3152a4c0b47dfb18d7b4fef7268288a388e61220cdba2881f1685',
        'egemaps': '11894cf449b6bf2fb0715ec296c7cf18fae805e8a1569629808f93a90494821b',
        'logmel': 'b4b6358f632e303221e7f4dc26c8c9c3baef6ba4315e82594ed40070be4fc747',
        'speech': 'ae95d96498e60de2e922b18cffe27b6a251db34ed63197d72f8b4ff5fec43385',
        'vggish': '9b7f6fa77032248828e9dc06d3224a48177f0b9e0908ad26333eb5a306a9e67e',
        'visual': '4e5f9c8abcc9f3e74ea4fdf80da1ff6ae84e0a78fdfdff8600c769c2a8568641',
        'visual_clip': 'dd7ac775c413017dd05d1572d0811c7e4c9319b0296ea734959e3b168da3457c',
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
