#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang + ASan/UBSan and runs each for SECONDS
# (default 10) from its seed corpus in tests/fuzz/corpus/<target>/. New inputs go to a work
# corpus under the build folder; the seed corpus in git is never changed. Exit 1 on a finding
# (the crashing input is kept as build-fuzz/crash-<target>-*). Without TARGETs it then runs
# `sanitized_tests`: the unit tests of the instrumented code (parsers, loader, layers, kernels,
# eval tasks and batching) under the same sanitizers; a failure or report is exit 1 too.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: safetensors config tokenizer token_dataset
#                                              eval_tasks packed_model
# Knobs: FUZZ_BUILD_DIR (build-fuzz), CXX (clang++), JOBS, and the LibTorch discovery of setup.sh
# (TORCH_DIR / CMAKE_PREFIX_PATH, else the venv that setup.sh made).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${1:-10}
shift || true
TARGETS=("$@")
UNIT_TESTS=0
((${#TARGETS[@]})) || { TARGETS=(safetensors config tokenizer token_dataset eval_tasks packed_model); UNIT_TESTS=1; }
BUILD=${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
CXX=${CXX:-clang++}
say() { printf '[fuzz] %s\n' "$*" >&2; }
# clang with its runtime libraries (libFuzzer, the sanitizers), from the distribution's packages.
if ! command -v "$CXX" >/dev/null && [[ "${ONEBIT_SKIP_APT:-0}" != 1 ]] && command -v apt-get >/dev/null; then
  SUDO=$([[ $(id -u) -eq 0 ]] || echo sudo)
  say "installing clang"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang >/dev/null
  ver=$(clang++ -dumpversion 2>/dev/null | cut -d. -f1)
  if [[ -n "$ver" ]] && apt-cache show "libclang-rt-$ver-dev" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "libclang-rt-$ver-dev" >/dev/null
  fi
fi
command -v "$CXX" >/dev/null || { say "error: $CXX not found (apt-get install clang)"; exit 1; }

PREFIX=${CMAKE_PREFIX_PATH:-}
PY=${ONEBIT_PYTHON:-$HOME/.cache/onebit/venv-torch-2.11.0/bin/python}
if [[ -z "${TORCH_DIR:-}" && -z "$PREFIX" ]]; then
  PREFIX=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') ||
    { say "error: no LibTorch: run scripts/setup.sh first, or set TORCH_DIR"; exit 1; }
fi
ARGS=(-S "$ROOT/tests/fuzz" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX")
[[ -n "$PREFIX" ]] && ARGS+=(-DCMAKE_PREFIX_PATH="$PREFIX")
[[ -n "${TORCH_DIR:-}" ]] && ARGS+=(-DTorch_DIR="$TORCH_DIR")
[[ -x "$PY" ]] && ARGS+=(-DONEBIT_PYTHON="$PY")  # the unit tests' references (setup.sh installs them)
command -v ninja >/dev/null && [[ ! -f "$BUILD/CMakeCache.txt" || -f "$BUILD/build.ninja" ]] && ARGS+=(-G Ninja)
command -v ccache >/dev/null && ARGS+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$BUILD"
cmake "${ARGS[@]}" >"$BUILD/configure.log" 2>&1 || { tail -20 "$BUILD/configure.log" >&2; say "error: configure failed"; exit 1; }
BUILD_TARGETS=("${TARGETS[@]/#/fuzz_}")
((UNIT_TESTS)) && BUILD_TARGETS+=(sanitized_tests)
cmake --build "$BUILD" -j "${JOBS:-$(nproc)}" --target "${BUILD_TARGETS[@]}"

status=0
for t in "${TARGETS[@]}"; do
  work="$BUILD/corpus/$t"
  mkdir -p "$work"
  # A leak in a rejected input is a finding too; LibTorch's own start-up allocations are not ours.
  log="$BUILD/fuzz_$t.log"
  if ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 "$BUILD/fuzz_$t" -max_total_time="$SECONDS_EACH" \
       -max_len=65536 -rss_limit_mb=4096 -timeout=10 -artifact_prefix="$BUILD/crash-$t-" -print_final_stats=1 \
       "$work" "$ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    say "$t: ${SECONDS_EACH}s, $runs inputs, no finding"
  else
    status=1
    say "$t: FINDING (log: $log)"
    grep -m5 -E 'ERROR|SUMMARY|runtime error|deadly signal|Test unit written' "$log" >&2 || tail -20 "$log" >&2
  fi
done
if ((UNIT_TESTS)); then
  log="$BUILD/sanitized_tests.log"
  if ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       "$BUILD/sanitized_tests" >"$log" 2>&1; then
    say "unit tests under ASan/UBSan: $(grep -E '^(All tests passed|test cases:)' "$log" | tail -1)"
  else
    status=1
    say "unit tests under ASan/UBSan: FAILED (log: $log)"
    grep -m10 -E 'FAILED|ERROR|SUMMARY|runtime error|deadly signal' "$log" >&2 || tail -30 "$log" >&2
  fi
fi
exit $status
