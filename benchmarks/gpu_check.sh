#!/usr/bin/env bash
# GPU readiness in one bounded run: install carried CUDA wheels, list the JAX devices and the project's missing
# imports, run the parity tests and the three outer-step benchmarks (JAX only) on the device, and write one report.
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine; report: ${OUT:-benchmarks/results}/gpu.md (+ gpu.log)
#   bash benchmarks/gpu_check.sh --dry-run   # the same sequence on the CPU in well under a minute (CI); report in a temp dir
#   bash benchmarks/gpu_check.sh --out DIR   # the report's directory, either mode
#   bash benchmarks/gpu_check.sh --budget S  # seconds for all parts (default 570), when a lease must hold more work
#
# Why one script: a lent GPU comes for minutes, offline (pip cannot reach PyPI; CUDA jax wheels, if needed, ride
# in .whl/). Every part runs under `timeout` against one 570 s deadline (10 minutes less the report and a margin),
# a part that fails or times out is recorded and the next one runs, so every run leaves a report. Exit status 1
# when a part failed or timed out.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INVOCATION="bash benchmarks/gpu_check.sh${*:+ $*}"
PY=${PYTHON:-python3}
BUDGET_S=570
SITE=/tmp/site
DRY=0
OUT_DIR=""
while (( $# )); do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR=${2:?--out takes a directory}; shift ;;
    --budget) BUDGET_S=${2:?--budget takes seconds}; shift
              [[ $BUDGET_S =~ ^[0-9]+$ ]] || { echo "--budget takes whole seconds, not $BUDGET_S" >&2; exit 2; } ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | cut -c3-; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n $OUT_DIR ]]; then  # relative to the caller's directory, not the repository's
  mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || exit 2
fi
cd "$ROOT" || exit 2

if (( DRY )); then
  # Same parts, CPU-sized: tests collected (imports and parametrisation) but not run, one seconds-long benchmark.
  export JAX_PLATFORMS=cpu
  EXPECT=cpu
  CONFIGS=(M2-L8-T2)
  BENCH_FLAGS=(--repeats 1 --warmup-s 0 --no-flops --peak-n 256)
  PYTEST_FLAGS=(--co -q)
  MODE="dry run on the CPU (tests collected only, smoke benchmark)"
  OUT_DIR=${OUT_DIR:-$(mktemp -d)}
else
  # cuda, not JAX's silent CPU fallback: a GPU that does not come up fails each part, with the reason, at once.
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
  EXPECT=gpu
  CONFIGS=(M4-L32-T10 M20-L64-T30 M40-L64-T100)
  BENCH_FLAGS=(--rounds 1 --repeats 10 --peak-n 8192)  # GPU steps take milliseconds: more timed steps are cheap
  PYTEST_FLAGS=(-q --durations=0)
  MODE="GPU"
  OUT_DIR=${OUT_DIR:-${OUT:-benchmarks/results}}
fi
mkdir -p "$OUT_DIR" || exit 2
REPORT=$OUT_DIR/gpu.md
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DEADLINE=$(( SECONDS + BUDGET_S ))
NAMES=() STATUSES=() TIMES=() CMDS=()

record() {  # NAME STATUS SECONDS COMMAND
  NAMES+=("$1") STATUSES+=("$2") TIMES+=("$3") CMDS+=("$4")
  echo "[gpu_check] $1: $2 (${3} s)"
}

run_part() {  # NAME CAP_S CMD...: runs CMD under `timeout`, at most CAP_S and never past the deadline
  local name=$1 cap=$2 start=$SECONDS rc status
  shift 2
  local left=$(( DEADLINE - SECONDS - 15 ))  # 15 s: timeout's --kill-after grace and the report
  if (( left < 10 )); then
    record "$name" "SKIPPED (the ${BUDGET_S} s budget is spent)" 0 "$*"
    return 1
  fi
  local limit=$(( cap < left ? cap : left ))
  echo "[gpu_check] $name: $* (limit ${limit} s)"
  { echo "\$ $*"; timeout --kill-after=10 "$limit" "$@"; } >"$WORK/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=OK ;;
    124|137) status="TIMEOUT (limit ${limit} s)" ;;
    *) status="FAIL (exit $rc)" ;;
  esac
  record "$name" "$status" $(( SECONDS - start )) "$*"
  (( rc == 0 ))
}

# (a) CUDA wheels carried in .whl/ (none can be downloaded there); without them, the image's own jax.
shopt -s nullglob
WHEELS=(.whl/*.whl)
if (( DRY )); then
  record install "SKIPPED (dry run; ${#WHEELS[@]} wheel(s) in .whl/ left alone)" 0 "-"
elif (( ${#WHEELS[@]} )); then
  run_part install 120 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "${WHEELS[@]}" \
    && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  echo "[gpu_check] no .whl/*.whl: using whatever jax is installed"
  record install "SKIPPED (no .whl/*.whl: using whatever jax is installed)" 0 "-"
fi

# (b) The devices JAX sees, and which of the project's imports are missing (the GPU image is not our pins).
run_part devices 90 "$PY" benchmarks/gpu_devices.py "$EXPECT"
DEVICE=$(grep -m1 '^jax .* on ' "$WORK/devices.log" || echo "unknown (see the devices part)")

# (c) Parity with the PyTorch reference and finite differences, JAX on the device at full float32 matmul
# precision: the tests' float32 tolerances are float32's, and JAX's default multiplies float32 in TF32 on
# Ampere and later GPUs. The parity and gradient tests only: on the first lease (benchmarks/results/gpu.md) each
# test took ~50 s on the H200, nearly all compilation, so the whole of test_inner.py does not fit the budget.
run_part parity 240 env JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -m pytest "${PYTEST_FLAGS[@]}" \
  tests/test_torch_reference.py tests/test_inner.py -k "torch or finite_differences or scan_equals"

# (d) The outer-step benchmark, one config per process tree, so a slow or failing config costs only itself.
for c in "${CONFIGS[@]}"; do
  run_part "bench-$c" 100 "$PY" benchmarks/bench_outer.py --configs "$c" --frameworks jax "${BENCH_FLAGS[@]}" \
    --out "$WORK/bench-$c.md"
done

# (e) The report, and every part's whole output beside it.
FAILED=0
{
  echo "# GPU check"
  echo
  echo "- Command: \`$INVOCATION\`"
  echo "- Mode: $MODE; JAX_PLATFORMS=$JAX_PLATFORMS"
  echo "- Date: $(date -Iseconds); code: git $(git rev-parse --short HEAD 2>/dev/null || echo unknown); host $(uname -n)"
  echo "- Device: $DEVICE"
  echo "- Time: $SECONDS s of the ${BUDGET_S} s budget"
  echo "- Parity tests ran with JAX_DEFAULT_MATMUL_PRECISION=highest; the benchmarks at JAX's default precision" \
       "(TF32 float32 matmuls on recent NVIDIA GPUs). On a GPU, peak RSS is host memory; XLA temp is device memory."
  echo
  echo "| part | status | seconds | command |"
  echo "|---|---|---|---|"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${STATUSES[$i]} | ${TIMES[$i]} | \`${CMDS[$i]}\` |"
    [[ ${STATUSES[$i]} == OK || ${STATUSES[$i]} == SKIPPED* ]] || FAILED=1
  done
  for name in "${NAMES[@]}"; do
    [[ -f $WORK/$name.log ]] || continue
    echo
    echo "## $name"
    echo
    if [[ -f $WORK/$name.md ]]; then
      sed 's/^# /### /' "$WORK/$name.md"  # the benchmark's own report, headings nested under this one
    else
      echo '```text'
      tail -n 25 "$WORK/$name.log"
      echo '```'
    fi
  done
} >"$REPORT"
for name in "${NAMES[@]}"; do
  [[ -f $WORK/$name.log ]] && { echo "===== $name"; cat "$WORK/$name.log"; }
done >"$OUT_DIR/gpu.log"
cat "$REPORT"
echo "[gpu_check] report: $REPORT (whole logs: $OUT_DIR/gpu.log)"
exit $FAILED
