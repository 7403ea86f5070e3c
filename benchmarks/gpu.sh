#!/usr/bin/env bash
# The GPU checks of issue 28, as run on a lent GPU machine through the device
# tool: that machine has torch, torchvision, timm and JAX but no TensorFlow and
# no network, so Keras runs on JAX and the compiler's own packages travel as
# wheels in .whl/ (see docs/performance.md, "GPU"). Each phase appends to
# $OUT/gpu.log and leaves its results in $OUT.
#
#     benchmarks/gpu.sh wheels                            # here, before the lease
#     benchmarks/gpu.sh install bench kernels check test  # there; .whl carried
#
# A session has 15 minutes of device time, machine starts included, and 10
# minutes per command; phases run in the order given, so put first what has
# not been measured yet. Timed on an H100 before: bench 190 s for seven
# models; one `archspec check` of B0 in both dtypes under 130 s. On this
# machine's 2 CPU cores (JAX on CPU), `check specs/resnet.yaml --variant all
# --size 64` (7 variants) took 92 s; the GPU machine runs 14 checks at once.
set -u
OUT=${OUT:-/tmp/archspec-gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/backends:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# Several checks share the GPU: JAX must not take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Keras's initialisers compile one XLA program per weight shape; checks of
# sibling specs share them through this cache.
export JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
PY=${PY:-python3}
# Every family of bench.py, the light ones first.
FAMILIES=b0,b3,resnet50,wide_resnet50_2,seresnet50,resnetv2_50,mobilenet_v1_100,mobilenet_v2_100,mnasnet1_0,mobilenet_v3_large_100,densenet121,efficientnet_v2_s,nasnetalarge,pnasnet5large
SMALL=${CHECK_SIZE:-128}

# One `archspec check`: "SPEC VARIANT SIZE DTYPE" (VARIANT all, SIZE native).
check_one() {
  spec=$1 variant=$2 size=$3 dtype=$4
  name=$(basename "$spec" .yaml)_${variant}_${size}_${dtype}
  args=(--variant "$variant" --device "${DEVICE:-cuda}" --dtype "$dtype")
  [ "$size" = native ] || args+=(--size "$size")
  timeout "${CHECK_TIMEOUT:-300}" "$PY" -m archspec check "$spec" "${args[@]}" \
    >"$OUT/checks/$name.log" 2>&1
  echo "$name exit $?"
}
export -f check_one
export OUT PY

for phase in "$@"; do
  start=$(date +%s)
  echo "== $phase" | tee -a "$OUT/gpu.log"
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
      { nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader
        "$PY" -c "import torch, torchvision, timm, jax, keras; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'jax', jax.__version__, jax.devices(), 'keras', keras.__version__, keras.backend.backend())"
      } 2>&1 | tee -a "$OUT/gpu.log"
      ;;
    bench)
      timeout "${BENCH_TIMEOUT:-400}" "$PY" benchmarks/bench.py --device cuda \
        --rounds "${BENCH_ROUNDS:-5}" --warmup 0 --variants "${BENCH_VARIANTS:-$FAMILIES}" \
        --out "$OUT" 2>&1 | grep -v "^USDT" | tail -80 | tee -a "$OUT/gpu.log"
      ;;
    kernels)
      timeout "${KERNELS_TIMEOUT:-120}" "$PY" benchmarks/gpu_kernels.py \
        "${KERNEL_VARIANTS:-resnet50,mobilenet_v3_large_100}" 2>&1 | grep -v "^USDT" \
        | tee "$OUT/kernels.txt" | tee -a "$OUT/gpu.log" >/dev/null
      ;;
    check)
      # Per spec and dtype: its first variant at its own resolution (and the
      # next odd size), then every variant at a small size. On the H200
      # (2026-12-04) a check spent 140-190 s building Keras on JAX with 8-14
      # running at once: the first-variant checks go first, the light specs
      # first, so that a short lease covers the most specs.
      mkdir -p "$OUT/checks"
      "$PY" - "${CHECK_SPECS:-}" "$SMALL" >"$OUT/check_jobs.txt" <<'EOF'
import sys
from pathlib import Path

from archspec.pipeline import load_spec, select

only = sys.argv[1].split()
specs = sorted(Path("specs").glob("*.yaml"))
heavy = ("nasnet", "pnasnet", "efficientnet_v2", "b0")
specs.sort(key=lambda p: (p.stem.startswith(heavy), p.stem))
specs = [s for s in specs if not only or s.stem in only]
for dtype in ("float32", "bfloat16"):
    for spec in specs:
        print(spec, select(load_spec(spec))[0].name, "native", dtype)
for dtype in ("float32", "bfloat16"):
    for spec in specs:
        print(spec, "all", sys.argv[2], dtype)
EOF
      timeout "${CHECK_BUDGET:-300}" xargs -P "${CHECK_JOBS:-8}" -L 1 \
        bash -c 'check_one "$0" "$1" "$2" "$3"' <"$OUT/check_jobs.txt" | tee -a "$OUT/gpu.log"
      # Every variant's result line, with the job it came from.
      grep -H -E "  (ok$|FAIL)" "$OUT"/checks/*.log | sed "s|$OUT/checks/||" >"$OUT/check_results.txt"
      echo "$(grep -c " ok$" "$OUT/check_results.txt") ok, $(grep -c "FAIL" "$OUT/check_results.txt") FAIL" \
        | tee -a "$OUT/gpu.log"
      tar czf "$OUT/check_logs.tgz" -C "$OUT" checks && rm -rf "$OUT/checks"
      ;;
    test)
      timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -p no:cacheprovider -m gpu \
        tests/test_parity.py 2>&1 | tail -15 | tee -a "$OUT/gpu.log"
      ;;
    *)
      echo "gpu.sh: unknown phase $phase" >&2
      exit 2
      ;;
  esac
  echo "== $phase: $(($(date +%s) - start)) s" | tee -a "$OUT/gpu.log"
done
