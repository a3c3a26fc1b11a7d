#!/usr/bin/env bash
# Builds the library, programs and tests with AddressSanitizer + UndefinedBehaviorSanitizer
# (gcc, -O1) into build-asan/ and runs the suite there (or the tests matching a ctest -R regex).
#
#   scripts/sanitize.sh                # everything
#   scripts/sanitize.sh 'io|tokenizer' # ctest -R subset
# LibTorch itself is not instrumented; leak checking is off (LibTorch keeps global state alive
# at exit); any ASan or UBSan report aborts the test, so ctest counts it as a failure.
# Knobs: ASAN_BUILD_DIR (build-asan), JOBS, and setup.sh's LibTorch discovery.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${ASAN_BUILD_DIR:-$ROOT/build-asan}
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# setup.sh installs the packages and configures; the sanitizer flags ride on CMAKE_*_FLAGS.
CXXFLAGS="$FLAGS" LDFLAGS="-fsanitize=address,undefined" BUILD_DIR="$BUILD" BUILD_TYPE=RelWithDebInfo \
  "$ROOT/scripts/setup.sh"
cd "$BUILD"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:protect_shadow_gap=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
args=(--output-on-failure -j "${JOBS:-$(nproc)}")
[[ $# -gt 0 ]] && args+=(-R "$1")
ctest "${args[@]}"
