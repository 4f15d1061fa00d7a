#!/usr/bin/env bash
# The GPU check in one command: install avpipe from this tree with the carried wheels (no network),
# then benchmarks/gpu_check.py: CUDA-marked tests, per-model epochs at fp32/fp16/bf16, faces and
# visual frames/s, device-vs-CPU agreement. Results: $OUT/gpu_check.json, gpu_check.md, gpu_check.log.
#
#   bash benchmarks/gpu_wheels.sh                      # once, on a machine with the registry
#   bash benchmarks/gpu_check.sh                       # on the GPU machine (carry benchmarks/out/gpu_wheels)
#   bash benchmarks/gpu_check.sh --device cpu --dry-run --no-install    # CPU dry run, a minute or two
#
# Options of this wrapper (the rest go to gpu_check.py, e.g. --budget-s 300 --parts train,extract):
#   --wheels DIR    carried wheels (default benchmarks/out/gpu_wheels)
#   --no-install    use the packages already importable (a dev environment)
#   --python PY     interpreter (default: $PYTHON or python3)
#   --out DIR       results (default: $OUT, else benchmarks/out/gpu_check)
#
# Install: `pip install --no-index --no-deps --target SITE` of every carried wheel, then avpipe itself
# from this tree into SITE (--no-build-isolation, setuptools from the wheels), PYTHONPATH=tree:SITE.
# A target folder rather than a venv: the machine's torch stays the one its Python already has, and
# nothing is installed into that Python. Without pip, the wheels are unpacked into SITE instead.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=benchmarks/out/gpu_wheels
INSTALL=1
PY=${PYTHON:-python3}
OUTDIR=${OUT:-$ROOT/benchmarks/out/gpu_check}
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --python) PY=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exec "$PY" benchmarks/gpu_check.py --help ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
exec > >(tee -a "$OUTDIR/gpu_check.log") 2>&1
echo "== gpu_check.sh $(date -u +%FT%TZ) on $(hostname), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ "$INSTALL" = 1 ]; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check.sh: no wheels in $WHEELS; run benchmarks/gpu_wheels.sh and carry that folder" >&2
    exit 2
  fi
  SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/avpipe_gpu_site}
  rm -rf "$SITE" && mkdir -p "$SITE"
  t0=$(date +%s)
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
      || { echo "gpu_check.sh: installing the carried wheels failed" >&2; exit 1; }
    # avpipe from the carried tree; its build backend (setuptools) comes from the wheels just installed
    PYTHONPATH="$SITE" "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
      --no-build-isolation --target "$SITE" "$ROOT" \
      || echo "gpu_check.sh: avpipe's own install failed; the tree on PYTHONPATH serves (built-in stages register without entry points)"
  else
    echo "gpu_check.sh: no pip in $PY; unpacking the wheels into $SITE"
    "$PY" - "$SITE" "$WHEELS"/*.whl <<'PY' || exit 1
import sys, zipfile
for w in sys.argv[2:]:
    zipfile.ZipFile(w).extractall(sys.argv[1])
PY
  fi
  echo "installed into $SITE in $(( $(date +%s) - t0 ))s: $(ls "$SITE" | grep -c dist-info) distributions"
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -c "import avpipe, torch, av, facenet_pytorch, pydantic; print('imports ok: avpipe', avpipe.__file__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())" \
  || { echo "gpu_check.sh: the environment cannot import what the check needs" >&2; exit 1; }
"$PY" benchmarks/gpu_check.py --out "$OUTDIR" "${ARGS[@]}"
rc=$?
echo "== gpu_check.py exit $rc; results in $OUTDIR"
exit $rc
