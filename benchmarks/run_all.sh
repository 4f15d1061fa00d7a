#!/usr/bin/env bash
# Runs every benchmark behind BENCHMARKS.md, one after another (never two at once: 2 cores),
# writing each one's output to benchmarks/out/<name>.txt.
#   bash benchmarks/run_all.sh
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/out
mkdir -p "$OUT"
run() { local name=$1; shift; echo "== $name: $*"; "$@" 2>&1 | tee "$OUT/$name.txt"; }
run warm_rerun       $PY benchmarks/bench_warm_rerun.py --n 100 --jobs 2
run warm_rerun_real  $PY benchmarks/bench_warm_rerun.py --n 100 --jobs 2 --real
run faces            $PY benchmarks/bench_faces.py --repeats 3 --threads 1
run audio            $PY benchmarks/bench_audio.py --threads 2 --seconds 30 --repeats 3
[ -d $OUT/syn ] || $PY benchmarks/make_synthetic_cache.py --out $OUT/syn --scale 0.05
run datapath         $PY benchmarks/bench_datapath.py --data $OUT/syn --batches 40 --repeats 5
run datapath_f32     $PY benchmarks/bench_datapath.py --data $OUT/syn --batches 40 --repeats 5 --dtype float32
# full Aff-Wild2 scale (≈5 GB on disk, ≈7 min to build): FULLSCALE=1 bash benchmarks/run_all.sh
if [ "${FULLSCALE:-0}" = 1 ]; then
  FULL=${FULL_DATA:-$OUT/syn_full}
  [ -d "$FULL" ] || $PY benchmarks/make_synthetic_cache.py --out "$FULL" --scale 1
  run fullscale      $PY benchmarks/bench_fullscale.py --data "$FULL" --threads 1 2 --repeats 5 --json $OUT/fullscale.json
fi
[ -d $OUT/syn_small ] || $PY benchmarks/make_synthetic_cache.py --out $OUT/syn_small --scale 0.01
run epochs           $PY benchmarks/bench_epochs.py --data $OUT/syn_small --device cpu
run sweep            $PY benchmarks/bench_sweep.py --data $OUT/syn_small --epochs 3
run memory           $PY benchmarks/bench_memory.py --minutes 2 8 16 60 --stages logmel,text --old "${OLD_REV:-none}"
run labels           $PY benchmarks/bench_labels.py --rows 2000000 --repeats 3
run published_av     $PY benchmarks/bench_published_reference.py --rounds 9 --threads 1
