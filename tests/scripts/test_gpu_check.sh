#!/usr/bin/env bash
# CI part of scripts/gpu-check.sh (issue: one GPU check in one command), run by ctest:
#   tests/scripts/test_gpu_check.sh BUILD_DIR [PYTHON]
# 1. the report writer turns step results into gpu-check.json / gpu-check.md, failures included;
# 2. deps-bundle.sh downloads a small subset of the packages (skipped without package access)
#    and setup.sh ONEBIT_DEPS_ONLY=1 unpacks them offline into a prefix CMake builds against;
# 3. gpu-check.sh on this GPU-less machine: the CPU fallback of every step, its JSON and summary;
# 5. gpu-prebuild.sh's folder of programs, and gpu-check.sh using it (or not: another torch).
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
  check "gpu-check: (d) profiles the decode step (operators per token on a CPU)" \
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1]))['steps']['deploy']; p=d['decode']['profile_onebit_bf16']['cpu']; sys.exit(0 if p['calls_per_token'] > 10 and p['us_per_token'] > 0 and len(p['top']) == 12 and 'operators/token' in d['summary'] else 1)" "$G/gpu-check.json"
  check "gpu-check: (d) times the 1-bit decode ungrouped and with the op sequences (no fused ops)" \
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1]))['steps']['deploy']; x=d['decode']; sys.exit(0 if x['onebit_bf16_ungrouped_tps'] > 0 and x['onebit_bf16_unfused_tps'] > 0 and 'op sequences too' in d['summary'] else 1)" "$G/gpu-check.json"
  check "gpu-check: each [cuda] case ran in its own process" test "$(grep -c '^=== exit' "$G/cuda_tests.log")" -ge 9
  ((fails)) && { cat "$TMP/gpu.log"; cat "$G"/*.log 2>/dev/null | tail -40; }
  # A spent budget: no step runs, each says why, and the report is still written.
  GB=$TMP/gpu-budget
  GPU_CHECK_SECONDS=1 GPU_CHECK_SKIP_BUILD=1 BUILD_DIR=$BUILD ONEBIT_PYTHON=$PY "$ROOT/scripts/gpu-check.sh" "$GB" \
    >"$TMP/gpu-budget.log" 2>&1
  check "gpu-check, budget spent: the report is written" test -s "$GB/gpu-check.md"
  check "gpu-check, budget spent: a step says so and its exit status" \
    grep -q "| failed | exit 125 (see nccl.log): out of time: GPU_CHECK_SECONDS=1 is spent |" "$GB/gpu-check.md"
  check "gpu-check, budget spent: no [cuda] test ran" test "$(grep -c "^=== exit 125" "$GB/cuda_tests.log")" -ge 9
  # A chosen subset of steps: the others say why they did not run; a step name not known is refused.
  GS=$TMP/gpu-steps
  GPU_CHECK_STEPS=nccl GPU_CHECK_SKIP_BUILD=1 BUILD_DIR=$BUILD ONEBIT_PYTHON=$PY "$ROOT/scripts/gpu-check.sh" "$GS" \
    >"$TMP/gpu-steps.log" 2>&1
  check "gpu-check, GPU_CHECK_STEPS=nccl: exit 0" test $? -eq 0
  check "gpu-check, GPU_CHECK_STEPS=nccl: nccl ran" test "$(json_get "$GS/gpu-check.json" "['steps']['nccl']['status']")" = ok
  check "gpu-check, GPU_CHECK_STEPS=nccl: the others are skipped, saying why" \
    test "$(json_get "$GS/gpu-check.json" "['steps']['deploy']['reason']")" = "not in GPU_CHECK_STEPS=nccl"
  out=$(GPU_CHECK_STEPS="nccl decode" "$ROOT/scripts/gpu-check.sh" "$TMP/gpu-bad-steps" 2>&1)
  rc=$?
  check "gpu-check: an unknown step exits 2" test $rc -eq 2
  check "gpu-check: an unknown step is named in one line" \
    test "$out" = "gpu-check: GPU_CHECK_STEPS: unknown step 'decode' (expected some of: cuda_tests nccl deploy distill_7b distill_step)"
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

# ---- 5. prebuilt programs: scripts/gpu-prebuild.sh here, gpu-check.sh GPU_CHECK_PREBUILT=DIR on a node ----
P=$TMP/prebuilt
BUILD_DIR=$BUILD "$ROOT/scripts/gpu-prebuild.sh" "$P" >"$TMP/prebuild.log" 2>&1
rc=$?
if ((rc != 0)) && grep -q "is not a CUDA build" "$TMP/prebuild.log"; then
  check "gpu-prebuild: a build without CUDA is refused in one line" test "$(wc -l <"$TMP/prebuild.log")" -eq 1
  echo "SKIPPED: prebuilt programs ($BUILD is not a CUDA build)"
else
  check "gpu-prebuild: exits 0" test $rc -eq 0
  check "gpu-prebuild: DIR/bin, DIR/lib and DIR/MANIFEST, no DIR.tmp left" test -d "$P/bin" -a -d "$P/lib" -a -s "$P/MANIFEST" -a ! -e "$P.tmp"
  check "gpu-prebuild: the MANIFEST names the linked torch" \
    test "$(sed -n 's/^torch=//p' "$P/MANIFEST")" = "$("$PY" -c 'import torch; print(torch.__version__)')"
  check "gpu-prebuild: the MANIFEST holds the checkout's sources hash" \
    test "$(sed -n 's/^sources=//p' "$P/MANIFEST")" = "$(bash "$ROOT/scripts/gpu-prebuild.sh" --sources-hash)"
  check "gpu-prebuild: the MANIFEST names the commit" grep -qE '^commit=[0-9a-f]{40}$' "$P/MANIFEST"
  check "gpu-prebuild: the MANIFEST names nvcc's version" grep -qE '^nvcc=[0-9]+\.[0-9]' "$P/MANIFEST"
  check "gpu-prebuild: the programs hold GPU code (cuda_archs)" grep -qE '^cuda_archs=[0-9]+' "$P/MANIFEST"
  # Every $BIN/<program> of gpu-check.sh travels.
  check "gpu-prebuild: carries every program gpu-check.sh runs" test \
    "$(grep -o '\$BIN/[A-Za-z0-9_-]*' "$ROOT/scripts/gpu-check.sh" | cut -d/ -f2 | sort -u | xargs)" = \
    "$(sed -n 's/^binaries=//p' "$P/MANIFEST" | tr ' ' '\n' | sort | xargs)"
  check "gpu-prebuild: leaves torch's, CUDA's and the C/C++ runtime's libraries behind" \
    test -z "$(find "$P/lib" -type f -printf '%f\n' |
      grep -E '^(libtorch|libc10|libcuda|libcudart|libcudnn|libcublas|libnccl|libnv|libgomp|libc\.|libm\.|libstdc|libgcc_s|ld-)')"
  check "gpu-prebuild: prints the size" grep -q "MiB" "$TMP/prebuild.log"

  # On a node: the node's torch is the MANIFEST's, so the steps run the prebuilt programs
  # (GPU_CHECK_SKIP_BUILD=1: were they refused, no real build would start here).
  G=$TMP/gpu-prebuilt
  GPU_CHECK_PREBUILT=$P GPU_CHECK_SKIP_BUILD=1 BUILD_DIR=$TMP/scratch ONEBIT_PYTHON=$PY \
    "$ROOT/scripts/gpu-check.sh" "$G" >"$TMP/gpu-prebuilt.log" 2>&1
  check "gpu-check prebuilt: the build step is 'prebuilt'" \
    test "$(json_get "$G/gpu-check.json" "['steps']['build']['status']")" = prebuilt
  check "gpu-check prebuilt: the reason names the MANIFEST's commit and torch" \
    grep -q "commit $(sed -n 's/^commit=//p' "$P/MANIFEST" | cut -c1-12).*torch $(sed -n 's/^torch=//p' "$P/MANIFEST")" "$G/build.json"
  check "gpu-check prebuilt: the steps ran the prebuilt programs" grep -q "exec $P/bin/onebit_tests" "$TMP/scratch/prebuilt-bin/onebit_tests"
  for s in cuda_tests distill_7b nccl deploy; do
    check "gpu-check prebuilt: step $s ok" test "$(json_get "$G/gpu-check.json" "['steps']['$s']['status']")" = ok
  done
  check "gpu-check prebuilt: step distill_step ok or skipped" \
    "$PY" -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['steps']['distill_step']['status'] in ('ok','skipped') else 1)" "$G/gpu-check.json"
  check "gpu-check prebuilt: the report counts 'prebuilt' as passing" test "$(json_get "$G/gpu-check.json" "['ok']")" = True
  ((fails)) && { cat "$TMP/gpu-prebuilt.log"; tail -20 "$G"/*.log; }

  # Another torch on the node: the prebuilt programs are not used, the build runs instead (here
  # GPU_CHECK_SKIP_BUILD=1 stands in for it, over an empty folder, so that the steps end at once).
  cp -r "$P" "$TMP/prebuilt-other"
  sed -i 's/^torch=.*/torch=0.0.1+other/' "$TMP/prebuilt-other/MANIFEST"
  G=$TMP/gpu-other
  GPU_CHECK_PREBUILT=$TMP/prebuilt-other GPU_CHECK_SKIP_BUILD=1 BUILD_DIR=$TMP/empty ONEBIT_PYTHON=$PY \
    "$ROOT/scripts/gpu-check.sh" "$G" >"$TMP/gpu-other.log" 2>&1
  check "gpu-check, another torch: falls back to the build" test "$(json_get "$G/build.json" "['status']")" = skipped
  check "gpu-check, another torch: the reason names both versions" \
    grep -q "prebuilt $TMP/prebuilt-other not used: torch .* here, 0.0.1+other in its MANIFEST" "$G/build.json"
  check "gpu-check, another torch: the build log says so too" grep -q "0.0.1+other in its MANIFEST" "$G/build.log"
  # ... and when that build fails too (here: an offline bundle without MANIFEST), the programs of
  # another torch are still better than none: used, and the build step says so.
  G=$TMP/gpu-other-failed
  GPU_CHECK_PREBUILT=$TMP/prebuilt-other GPU_CHECK_STEPS=nccl ONEBIT_DEPS=$TMP/nothing BUILD_DIR=$TMP/empty2 \
    ONEBIT_PYTHON=$PY "$ROOT/scripts/gpu-check.sh" "$G" >"$TMP/gpu-other-failed.log" 2>&1
  check "gpu-check, another torch and a failed build: the prebuilt programs are used" \
    test "$(json_get "$G/build.json" "['status']")" = prebuilt
  check "gpu-check, another torch and a failed build: the reason says so" \
    grep -q "setup.sh failed, so despite the mismatch: .*0.0.1+other in its MANIFEST" "$G/build.json"
  check "gpu-check, another torch and a failed build: the step ran them" \
    test "$(json_get "$G/gpu-check.json" "['steps']['nccl']['status']")" = ok
  # A checkout edited since: its sources hash differs from the MANIFEST's, so again the build.
  cp -r "$P" "$TMP/prebuilt-edited"
  sed -i 's/^sources=.*/sources=0123456789abcdef/' "$TMP/prebuilt-edited/MANIFEST"
  G=$TMP/gpu-edited
  GPU_CHECK_PREBUILT=$TMP/prebuilt-edited GPU_CHECK_SKIP_BUILD=1 BUILD_DIR=$TMP/empty ONEBIT_PYTHON=$PY \
    "$ROOT/scripts/gpu-check.sh" "$G" >"$TMP/gpu-edited.log" 2>&1
  check "gpu-check, other sources: falls back, naming the sources" \
    grep -q "prebuilt $TMP/prebuilt-edited not used: this checkout's sources .* (0123456789abcdef)" "$G/build.json"
fi
# A missing program: one line naming it, a non-zero exit (a stand-in build folder of links).
F=$TMP/fakebuild
mkdir -p "$F"
for f in CMakeCache.txt libonebit_cuda.a onebit_tests bench-train-step bench-distill-step bench-packed-gemv; do
  ln -s "$BUILD/$f" "$F/$f"
done
out=$(BUILD_DIR=$F "$ROOT/scripts/gpu-prebuild.sh" "$TMP/prebuilt-missing" 2>&1)
rc=$?
check "gpu-prebuild: a missing program exits non-zero" test $rc -ne 0
check "gpu-prebuild: a missing program is named in one line" \
  test "$out" = "gpu-prebuild: error: $F/bench-packed-decode is missing: build it first (ninja -C $F onebit_tests bench-train-step bench-distill-step bench-packed-gemv bench-packed-decode)"
check "gpu-prebuild: nothing is left behind" test ! -e "$TMP/prebuilt-missing" -a ! -e "$TMP/prebuilt-missing.tmp"

# The programs take the checkout's paths from the environment (ONEBIT_BENCH_PY_DIR here; the
# C++ test "ONEBIT_SOURCE_DIR, ONEBIT_BINARY_DIR and ..." checks all three): the Python side of
# bench-distill-step is a stand-in that leaves a mark.
if grep -q ONEBIT_BENCH_PY_DIR "$BUILD/bench-distill-step"; then
  mkdir -p "$TMP/py"
  printf 'import sys\nopen(sys.argv[0] + ".ran", "w").close()\nsys.exit(3)\n' >"$TMP/py/distill_step.py"
  ONEBIT_BENCH_PY_DIR=$TMP/py "$BUILD/bench-distill-step" --layers 1 --hidden 64 --ffn 128 --vocab 100 --batch 1 --seq 8 \
    --iters 1 --warmup 1 --python "$PY" --dir "$TMP/distill" >"$TMP/py.log" 2>&1
  check "bench-distill-step: ONEBIT_BENCH_PY_DIR names the folder of its Python script" test -e "$TMP/py/distill_step.py.ran"
else
  echo "SKIPPED: ONEBIT_BENCH_PY_DIR ($BUILD/bench-distill-step was built before it)"
fi

echo "$fails failed"
((fails == 0))
