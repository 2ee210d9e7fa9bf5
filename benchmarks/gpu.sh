#!/usr/bin/env bash
# The GPU benchmarks of issue 7, in one go, from the repository root:
#
#     OUT=/tmp/gpu-bench bash benchmarks/gpu.sh
#
# Runs `raynerf bench` for the paper's `360` model at batch 16384 in float32 and in
# bfloat16 (MFU against the matmul peak of the same dtype, measured in the same run),
# then `tiny` at 16384, and the bf16 loss test on the accelerator; the part `profile`
# (not run by default) sums the kernels of one bf16 `360` step (benchmarks/step_profile.py).
# PARTS="360_f32 tiny_bf16 ..." picks some. Each JSON lands in $OUT; a part that fails (e.g. out of
# memory) does not stop the others. Uses the python3 on PATH with raynerf on
# PYTHONPATH, so it runs on a machine whose image already has JAX with CUDA, no install.
set -u
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax-cache}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"

bench() {  # NAME ARGS...: one `raynerf bench`, its table to the log, its JSON to $OUT/NAME.json
  local name=$1; shift
  echo "== $name: $*"
  timeout "${BENCH_TIMEOUT:-240}" $PY -m raynerf.cli bench --only train --only render \
      --json "$OUT/$name.json" "$@" 2>&1 | grep -v "^WARNING\|^I0000\|^W0000" | tail -15
}

bf16_test() {
  echo "== bf16 loss within 1% of f32, on the accelerator"
  JAX_PLATFORMS=cuda timeout 120 $PY -m pytest -q -p no:cacheprovider \
      tests/model/test_model.py -k bfloat16 2>&1 | tail -3
}

for part in ${PARTS:-360_f32 360_bf16 bf16_test tiny_f32 tiny_bf16}; do
  case $part in
    bf16_test) bf16_test ;;
    profile) timeout "${BENCH_TIMEOUT:-240}" $PY benchmarks/step_profile.py --config 360 --batch-size 16384 \
        --set model.compute_dtype=bfloat16 2>&1 | grep -v "^WARNING\|^I0000\|^W0000" | tee "$OUT/profile_360_bf16.txt" ;;
    *_f32) bench "$part" --config "${part%_f32}" --batch-size 16384 --steps 10 --render-chunk 16384 ;;
    *_bf16) bench "$part" --config "${part%_bf16}" --batch-size 16384 --steps 10 --render-chunk 16384 \
        --set model.compute_dtype=bfloat16 ;;
  esac
done
echo "== done"
