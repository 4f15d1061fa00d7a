"""Built-in stages, one module each. Importing this package registers them.

The stage graph (docs/stages.md#stage-graph)::

    probe ──┬── faces ──┬── visual
            │           └── visual_clip
            └── audio ──┬── logmel
                        ├── egemaps
                        ├── vggish
                        ├── speech
                        └── asr ──┬── text
                                  └── speech_segments (+ audio)

Each module declares its own ``requires``; this list is the one place that says which modules
make up the built-in graph. Modules import their heavy or optional dependencies (torch, dlib,
whisper, transformers) lazily, so importing them is cheap and never fails for a missing extra.
"""
from __future__ import annotations

import importlib

BUILTIN_STAGE_MODULES = (
    "avpipe.pipeline.probe",
    "avpipe.extractors.faces",
    "avpipe.extractors.visual",
    "avpipe.extractors.visual_clip",
    "avpipe.extractors.audio",
    "avpipe.extractors.logmel",
    "avpipe.extractors.egemaps",
    "avpipe.extractors.vggish",
    "avpipe.extractors.asr",
    "avpipe.extractors.text",
    "avpipe.extractors.speech",
)

for _m in BUILTIN_STAGE_MODULES:
    importlib.import_module(_m)
