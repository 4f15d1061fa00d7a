"""Environment for tests that run ``python -m avpipe`` in a subprocess with the toy stages."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_TOY_HOOKS = ("AVPIPE_TOY_KILL", "AVPIPE_TOY_KILL_ONCE", "AVPIPE_TOY_KILL_SIGNAL", "AVPIPE_TOY_SLEEP",
              "AVPIPE_TOY_LOG")


def toy_env(**extra: str) -> dict[str, str]:
    """This process's environment, this checkout first on ``PYTHONPATH``, the toy stages loaded as a
    plugin, no toy fault hook left over from the caller, then ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AVPIPE_PLUGINS"] = "tests.pipeline.toy_stages"
    for k in _TOY_HOOKS:
        env.pop(k, None)
    env.update(extra)
    return env
