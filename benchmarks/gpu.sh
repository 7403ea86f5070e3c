#!/usr/bin/env bash
# The GPU paths (issue 16), as run on a lent GPU machine through the device
# tool: that machine has torch, torchvision, timm and JAX but no TensorFlow and
# no network, so Keras runs on JAX and the compiler's own packages travel as
# wheels in .whl/ (see docs/performance.md, "GPU"). Each phase writes its log to $OUT.
#
#     benchmarks/gpu.sh wheels                    # here, before the lease
#     benchmarks/gpu.sh install check bench profile test   # there; .whl carried
#
# A session has 30 minutes of GPU time and 10 per command: on an H100 `bench`
# took 190 s for seven models and one check of B0 (both dtypes at once)
# under 130 s, so give each command two or three phases.
set -u
OUT=${OUT:-/tmp/archspec-gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/backends:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# Several checks share the GPU: JAX must not take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Keras's initialisers compile one XLA program per weight shape; the checks of
# one spec in two dtypes (and sibling specs) share them through this cache.
export JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
PY=${PY:-python3}

# One `archspec check` per spec and dtype, four at a time, every variant at
# its own resolution.
check_one() {
  spec=$1 dtype=$2
  name=$(basename "$spec" .yaml)
  timeout "${CHECK_TIMEOUT:-420}" "$PY" -m archspec check "$spec" --variant all \
    --device cuda --dtype "$dtype" >"$OUT/check_${name}_${dtype}.log" 2>&1
  echo "$name $dtype exit $?"
}
export -f check_one
export OUT PY

for phase in "$@"; do
  start=$(date +%s)
  case $phase in
    wheels)
      # The compiler's own stack, and Keras, for the GPU image's Python 3.12:
      # CI's pins where it has them, so both machines run the same versions.
      pins=$(grep -E '^(keras|pydantic|pydantic_core|ruamel\.yaml)==' .ci/constraints.txt)
      [ "$(echo "$pins" | wc -l)" = 4 ] || { echo "gpu.sh: pins missing from .ci/constraints.txt" >&2; exit 1; }
      for req in $pins namex optree annotated-types typing-inspection typing_extensions; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
          --implementation cp --platform manylinux_2_28_x86_64 \
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$req" || exit 1
      done
      ;;
    install)
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 1
      nvidia-smi -L
      "$PY" -c "import torch, torchvision, timm, jax, keras; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'jax', jax.__version__, jax.devices(), 'keras', keras.__version__, keras.backend.backend())"
      ;;
    check)
      for dtype in float32 bfloat16; do
        for spec in specs/*.yaml; do echo "$spec $dtype"; done
      done | timeout "${CHECK_BUDGET:-3000}" \
        xargs -P "${CHECK_JOBS:-4}" -L 1 bash -c 'check_one "$0" "$1"'
      # Every variant's summary line, one file to read.
      grep -h -E "  (ok|FAIL)" "$OUT"/check_*_float32.log >"$OUT/check_float32.txt"
      grep -h -E "  (ok|FAIL)" "$OUT"/check_*_bfloat16.log >"$OUT/check_bfloat16.txt"
      tar czf "$OUT/check_logs.tgz" -C "$OUT" $(cd "$OUT" && ls check_*.log)
      rm -f "$OUT"/check_*.log
      ;;
    bench)
      timeout "${BENCH_TIMEOUT:-3000}" "$PY" benchmarks/bench.py --device cuda ${BENCH_ARGS:-} --variants \
        "${BENCH_VARIANTS:-b0,b3,resnet50,mobilenet_v2_100,mnasnet1_0,mobilenet_v3_large_100,densenet121,efficientnet_v2_s}" \
        2>&1 | tail -60
      cp benchmarks/results/latest_cuda.json benchmarks/results/latest_cuda.md "$OUT/"
      ;;
    profile)
      "$PY" -m archspec profile specs/b0.yaml --variant all --device cuda \
        --batch 64 --dtype bfloat16 --json "$OUT/profile_b0_cuda.json" \
        --markdown "$OUT/profile_b0_cuda.md" 2>&1 | tail -15
      ;;
    test)
      "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_parity.py 2>&1 | tail -15
      ;;
    *)
      echo "gpu.sh: unknown phase $phase" >&2
      exit 2
      ;;
  esac
  echo "== $phase: $(($(date +%s) - start)) s"
done
