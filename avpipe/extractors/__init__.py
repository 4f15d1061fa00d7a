"""Built-in stages, one module each. Importing this package registers them.

The stage graph (design.md)::

    probe ──┬── faces ── visual
            └── audio ──┬── logmel
                        ├── vggish
                        └── asr ── text

Each module declares its own ``requires``; this list is the one place that says which modules
make up the built-in graph. A module that fails to import (an optional extra missing) must not
break the others, so optional backends import their heavy dependencies lazily.
"""
from __future__ import annotations

import importlib

BUILTIN_STAGE_MODULES = (
    "avpipe.pipeline.probe",
    "avpipe.extractors.faces",
    "avpipe.extractors.visual",
    "avpipe.extractors.audio",
    "avpipe.extractors.logmel",
    "avpipe.extractors.vggish",
    "avpipe.extractors.asr",
    "avpipe.extractors.text",
)

for _m in BUILTIN_STAGE_MODULES:
    try:
        importlib.import_module(_m)
    except ModuleNotFoundError as _e:  # a module not written yet, or an optional extra missing
        if _e.name is None or not _e.name.startswith("avpipe"):
            raise
