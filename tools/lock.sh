#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml. The lock is the one place versions are decided:
# `make test`, `make demo` and CI install exactly it (with hashes); pyproject.toml keeps the ranges a
# user's own environment may satisfy.
#
#   tools/lock.sh                                   # keep every pin that still satisfies pyproject.toml
#   tools/lock.sh --upgrade                         # re-resolve everything to the newest allowed
#   tools/lock.sh --upgrade-package numpy           # move one package (or NAME==VERSION)
#
# tests/test_lock.py fails when pyproject.toml and the lock disagree, or when the installed
# environment is not the lock's.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${LOCK_TOOLS_VENV:-.lock-tools}
if ! test -x "$tools/bin/pip-compile"; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet pip==26.3 pip-tools==7.7.0
fi
"$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links --extra dev \
  --output-file requirements.lock "$@" pyproject.toml
# avpipe[dev] names avpipe[models,faces,...]: pip-compile writes that self-reference as an
# unhashed `avpipe @ file://...` line, which --require-hashes would refuse. avpipe itself is
# installed from the checkout (pip install --no-deps -e .), so the line goes.
python3 - <<'PY'
import re, pathlib
p = pathlib.Path("requirements.lock")
text = p.read_text()
text = re.sub(r"# WARNING: pip install will require.*?\n(?:#.*\n)*avpipe @ file:\S+\n(?:    .*\n)*", "", text)
p.write_text(text)
PY
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages pinned"
