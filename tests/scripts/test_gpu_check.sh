#!/usr/bin/env bash
# CI part of scripts/gpu-check.sh (issue: one GPU check in one command), run by ctest:
#   tests/scripts/test_gpu_check.sh BUILD_DIR [PYTHON]
# 1. the report writer turns step results into gpu-check.json / gpu-check.md, failures included;
# 2. deps-bundle.sh downloads a small subset of the packages (skipped without package access)
#    and setup.sh ONEBIT_DEPS_ONLY=1 unpacks them offline into a prefix CMake builds against;
# 3. gpu-check.sh on this GPU-less machine: the CPU fallback of every step, its JSON and summary.
set -uo pipefail
BUILD=$(cd "$1" && pwd)
PY=${2:-}
[[ -n "$PY" && -x "$PY" ]] || PY=python3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$ROOT/tests/scripts/checks.sh"
json_get() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$@"; }

# ---- 1. the report writer ----
R=$TMP/report
mkdir -p "$R"
echo '{"gpu": "NVIDIA H200", "host": "node1", "date": "2026-12-01T00:00:00Z", "seconds": 312}' >"$R/meta.json"
echo '{"status": "ok", "seconds": 95}' >"$R/build.json"
echo '{"status": "ok", "seconds": 20, "passed": 7, "failed": 0, "skipped": 0}' >"$R/cuda_tests.json"
echo '{"status": "ok", "seconds": 80, "params": 6738415616, "peak_bytes": 75161927680,
       "planned_peak_bytes": 73014444032, "tokens_per_s": 5000.0, "mfu": 0.41}' >"$R/distill_7b.json"
echo '{"status": "failed", "seconds": 3, "reason": "exit 1 (see distill_step.log)"}' >"$R/distill_step.json"
echo '{"status": "skipped", "seconds": 0, "reason": "no programs"}' >"$R/deploy.json"
"$PY" "$ROOT/scripts/gpu_check_report.py" "$R" >"$TMP/report.out"
rc=$?
check "report: a failed step makes the exit status 1" test $rc -eq 1
check "report: gpu-check.json says not ok" test "$(json_get "$R/gpu-check.json" "['ok']")" = False
check "report: a step that never ran is 'missing'" test "$(json_get "$R/gpu-check.json" "['steps']['nccl']['status']")" = missing
check "report: the 7B row carries peak, plan, tokens/s and MFU" \
  grep -q "| (a) LLaMA-7B-shaped distillation, one GPU | ok | 6.74B params, peak 70.0 GiB (planned 68.0), 5000 tokens/s, MFU 41.0% |" "$R/gpu-check.md"
check "report: the failure reason is in the table" grep -q "| failed | exit 1 (see distill_step.log) |" "$R/gpu-check.md"
check "report: the GPU is named in the title" grep -q "^# onebit GPU check: NVIDIA H200" "$R/gpu-check.md"

# ---- 2. offline bundle and setup ----
if apt-get download --print-uris nlohmann-json3-dev >/dev/null 2>&1 &&
    "$ROOT/scripts/deps-bundle.sh" "$TMP/bundle" nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 >"$TMP/bundle.log" 2>&1; then
  check "bundle: MANIFEST lists the 3 packages" test "$(wc -l <"$TMP/bundle/MANIFEST")" -eq 3
  check "bundle: the .deb files are there" test "$(ls "$TMP/bundle"/*.deb | wc -l)" -eq 3
  ONEBIT_DEPS=$TMP/bundle ONEBIT_DEPS_PREFIX=$TMP/prefix ONEBIT_DEPS_ONLY=1 "$ROOT/scripts/setup.sh" >"$TMP/unpack.log" 2>&1
  check "setup: unpacks offline (ONEBIT_DEPS_ONLY=1)" test $? -eq 0
  check "setup: the headers are in the prefix" test -f "$TMP/prefix/usr/include/nlohmann/json.hpp"
  check "setup: the runtime library is in the prefix" test -e "$TMP/prefix/usr/lib/x86_64-linux-gnu/libyaml-cpp.so.0.7"
  check "setup: pkg-config files point into the prefix" grep -q "^prefix=$TMP/prefix/usr" "$TMP/prefix/usr/lib/x86_64-linux-gnu/pkgconfig/yaml-cpp.pc"
  # CMake finds the prefix's packages first (what the offline build relies on).
  mkdir -p "$TMP/cm"
  printf 'cmake_minimum_required(VERSION 3.16)\nproject(p CXX)\nfind_package(nlohmann_json REQUIRED)\nfind_package(yaml-cpp REQUIRED)\nmessage(STATUS "json=${nlohmann_json_DIR} yaml=${yaml-cpp_DIR}")\n' >"$TMP/cm/CMakeLists.txt"
  cmake -S "$TMP/cm" -B "$TMP/cm/b" -DCMAKE_PREFIX_PATH="$TMP/prefix/usr" >"$TMP/cm.log" 2>&1
  check "cmake: finds nlohmann_json and yaml-cpp in the prefix" grep -q "json=$TMP/prefix/usr/.* yaml=$TMP/prefix/usr/" "$TMP/cm.log"
  ONEBIT_DEPS=$TMP/nothing "$ROOT/scripts/setup.sh" >"$TMP/bad.log" 2>&1
  check "setup: a folder without MANIFEST is refused" grep -q "has no MANIFEST" "$TMP/bad.log"
else
  echo "SKIPPED: bundle and offline setup (no package access for apt-get download)"
fi

# ---- 3. gpu-check.sh's CPU fallback ----
if [[ -x "$BUILD/bench-train-step" && -x "$BUILD/onebit_tests" ]]; then
  G=$TMP/gpu
  GPU_CHECK_SKIP_BUILD=1 BUILD_DIR=$BUILD ONEBIT_PYTHON=$PY "$ROOT/scripts/gpu-check.sh" "$G" >"$TMP/gpu.log" 2>&1
  check "gpu-check: wrote gpu-check.json and gpu-check.md" test -s "$G/gpu-check.json" -a -s "$G/gpu-check.md"
  check "gpu-check: no GPU is named as such" test "$(json_get "$G/gpu-check.json" "['gpu']")" = none
  check "gpu-check: the build step was skipped as asked" test "$(json_get "$G/gpu-check.json" "['steps']['build']['status']")" = skipped
  check "gpu-check: [cuda] tests ran (and skip without a GPU)" test "$(json_get "$G/gpu-check.json" "['steps']['cuda_tests']['status']")" = ok
  check "gpu-check: (a) ran at the CPU shape" test "$(json_get "$G/gpu-check.json" "['steps']['distill_7b']['status']")" = ok
  check "gpu-check: (a) measured tokens/s and a planned peak" \
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1]))['steps']['distill_7b']; sys.exit(0 if d['tokens_per_s'] > 0 and d['planned_peak_bytes'] > 0 and d['peak_bytes'] > 0 else 1)" "$G/gpu-check.json"
  for s in distill_step nccl deploy; do
    check "gpu-check: step $s has a status" \
      "$PY" -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['steps'][sys.argv[2]]['status'] in ('ok','skipped','failed') else 1)" "$G/gpu-check.json" "$s"
  done
  check "gpu-check: (d) ran the kernel and decode benchmarks" test "$(json_get "$G/gpu-check.json" "['steps']['deploy']['status']")" = ok
  check "gpu-check: (d) has GEMV rates and the decode speed-up" \
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1]))['steps']['deploy']; sys.exit(0 if len(d['gemv']) >= 3 and all(g['weight_gbs'] > 0 for g in d['gemv']) and d['decode']['speedup_bf16'] > 0 and 'decode' in d['summary'] else 1)" "$G/gpu-check.json"
  ((fails)) && { cat "$TMP/gpu.log"; cat "$G"/*.log 2>/dev/null | tail -40; }
else
  echo "FAIL gpu-check: $BUILD has no bench-train-step/onebit_tests"
  fails=$((fails + 1))
fi
# ---- 4. the (d) benchmark's own bad input: one clear line, a non-zero exit ----
out=$("$BUILD/bench-packed-gemv" --shapes 12x 2>&1)
rc=$?
check "bench-packed-gemv: a bad --shapes exits non-zero" test $rc -ne 0
check "bench-packed-gemv: a bad --shapes is named in one line" \
  test "$out" = "bench-packed-gemv: error: --shapes: '12x' is not INxOUT with positive sizes (e.g. 4096x11008)"

echo "$fails failed"
((fails == 0))
