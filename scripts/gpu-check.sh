#!/usr/bin/env bash
# onebit's GPU check in one command, for one short window on a GPU node without internet:
#
#   scripts/gpu-check.sh OUT_DIR
#
# 1. builds (scripts/setup.sh; ONEBIT_DEPS=DIR for an offline bundle of scripts/deps-bundle.sh,
#    default $ROOT/deps when it holds one) against the node's own python3 torch; or, saving those
#    minutes, runs the programs scripts/gpu-prebuild.sh made elsewhere: GPU_CHECK_PREBUILT=DIR, by
#    default $ROOT/.gpu-prebuilt when it has a MANIFEST (not with GPU_CHECK_SKIP_BUILD=1; =none:
#    never), used when the node's torch version and the checkout's sources are its MANIFEST's
#    and they start, else it builds;
# 2. runs every [cuda] test; then, cheapest first, (c), (d), (a), (b):
# (a) a LLaMA-7B-shaped OneBit distillation from a random-weight teacher, 4 x 2048 tokens on ONE
#     GPU (bf16, gradient checkpointing, lean precision: bf16 latent W, int8 AdamW moments, frozen
#     tensors shared with the teacher): peak GPU memory,
#     tokens/s, MFU (8·N FLOPs per token against GPU_PEAK_TFLOPS, known for A100/H100/H200);
# (b) bench-distill-step (onebit vs PyTorch + transformers) at about 1B parameters;
# (c) the NCCL path at world size 1 (bench-train-step --nccl);
# (d) the deployment benchmarks: packed GEMV/GEMM kernels (bench-packed-gemv), decode (bench-packed-decode).
# Each step writes OUT_DIR/<step>.json; OUT_DIR/gpu-check.json and gpu-check.md sum them up,
# rewritten after every step (a check killed from outside leaves the steps done so far).
# Without a GPU (or GPU_CHECK_SMALL=1) the same steps run at small CPU shapes, which is what CI
# checks. Knobs: BUILD_DIR (default build-gpu), JOBS, ONEBIT_PYTHON, GPU_PEAK_TFLOPS,
# GPU_CHECK_SECONDS (a budget for the whole check, default 480 with a GPU, none without: steps
# past it are cut short or not run, and the report is still written), GPU_CHECK_STEPS (the
# steps to run, in this order; default "cuda_tests nccl deploy distill_7b distill_step").
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -eq 1 && "$1" != -h && "$1" != --help ]] || { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; [[ $# -eq 1 ]]; exit $?; }
OUT=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "gpu-check: cannot create $1" >&2; exit 2; } >&2
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
PY=${ONEBIT_PYTHON:-python3}
start=$(date +%s)
ALL_STEPS="cuda_tests nccl deploy distill_7b distill_step"
STEPS=${GPU_CHECK_STEPS:-$ALL_STEPS}
for s in $STEPS; do
  [[ " $ALL_STEPS " == *" $s "* ]] || { echo "gpu-check: GPU_CHECK_STEPS: unknown step '$s' (expected some of: $ALL_STEPS)"; exit 2; } >&2
done
say() { printf '\033[1m[gpu-check]\033[0m %s\n' "$*" >&2; }

# A step's result file: status, seconds, reason, then extra JSON fields (a JSON object's body).
result() {  # name status seconds reason [extra-json-object]
  "$PY" - "$OUT/$1.json" "$2" "$3" "$4" "${5:-}" <<'PY'
import json, os, sys
path, status, secs, reason, extra = sys.argv[1:6]
r = json.loads(extra) if extra.strip() else {}
r.update({"status": status, "seconds": float(secs), "reason": reason})
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(r, f, indent=2)
os.replace(tmp, path)
PY
}
# Merges a bench's JSON output file into a step result.
result_from() {  # name status seconds reason json-file
  local extra="{}"
  [[ -s "$5" ]] && extra=$(cat "$5")
  result "$1" "$2" "$3" "$4" "$extra"
}

# Runs a step with a time limit; $1 = name, $2 = limit (s), rest = command; output in OUT/<name>.log.
# GPU_CHECK_SECONDS=N (0: no limit): the whole check's budget, so that one call in a short
# window ends in time with its report; a step gets at most what is left (minus 20 s for the
# report), and none when less than 15 s is left.
capped() {  # capped LIMIT → the limit to use now (0: out of time)
  local budget=${GPU_CHECK_SECONDS:-0} left
  ((budget > 0)) || { echo "$1"; return; }
  left=$((start + budget - 20 - $(date +%s)))
  ((left < 15)) && { echo 0; return; }
  echo $((left < $1 ? left : $1))
}
run_step() {
  local name=$1 limit
  limit=$(capped "$2")
  shift 2
  if ((limit == 0)); then
    echo "out of time: GPU_CHECK_SECONDS=$GPU_CHECK_SECONDS is spent" >"$OUT/$name.log"
    return 125
  fi
  timeout -k 15 "$limit" "$@" >"$OUT/$name.log" 2>&1
}

# ---- the machine ----
GPU=none
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
else  # a container without nvidia-smi: ask torch
  GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>/dev/null |
    tail -1)
  [[ -n "$GPU" ]] || GPU=none
fi
[[ "$GPU" == none ]] || GPU_CHECK_SECONDS=${GPU_CHECK_SECONDS:-480}
SMALL=${GPU_CHECK_SMALL:-0}
[[ "$GPU" == none ]] && SMALL=1
DEVICE=cuda
[[ "$GPU" == none ]] && DEVICE=cpu
case "$GPU" in
  *H100*|*H200*|*H800*) PEAK_DEFAULT=989 ;;  # dense bf16, SXM
  *A100*|*A800*) PEAK_DEFAULT=312 ;;
  *) PEAK_DEFAULT=0 ;;
esac
PEAK=${GPU_PEAK_TFLOPS:-$PEAK_DEFAULT}
SMI=$(nvidia-smi --query-gpu=driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null |
  head -1)
"$PY" - "$OUT/meta.json" "$GPU" "$(hostname)" "$(date -u +%FT%TZ)" "$SMI" <<'PY'
import json, sys
json.dump({"gpu": sys.argv[2], "host": sys.argv[3], "date": sys.argv[4],
           "nvidia_smi": "driver, memory, max SM clock, power limit: " + sys.argv[5] if sys.argv[5] else ""},
          open(sys.argv[1], "w"))
PY
say "GPU: $GPU; out: $OUT"

# ---- 1. build, or programs prebuilt elsewhere ----
t=$(date +%s)
mkdir -p "$BUILD_DIR"  # the build, or with prebuilt programs the steps' scratch folders
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
: >"$OUT/build.log"
BIN=$BUILD_DIR
# A MANIFEST's value: mget KEY FILE.
mget() { sed -n "s/^$1=//p" "$2" | head -1; }
# Tries the prebuilt programs of $1 (scripts/gpu-prebuild.sh): on success BIN holds wrappers that
# run them with DIR/lib and the node torch's libraries on LD_LIBRARY_PATH (set for them alone: the
# node's own tools keep their libraries); else returns 1 with the reason in WHY. $2 = any: also
# with another torch version or other sources (the last resort when the build failed; each
# program must still start).
use_prebuilt() {
  local dir m want have tlib libpath d cap archs p wrap out any=${2:-} mismatch=""
  dir=$(cd "$1" 2>/dev/null && pwd) || { WHY="no folder $1"; return 1; }
  m=$dir/MANIFEST
  [[ -f "$m" ]] || { WHY="$dir has no MANIFEST"; return 1; }
  want=$(mget torch "$m")
  out=$("$PY" -c 'import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>&1) ||
    { WHY="$PY cannot import torch: $(tail -1 <<<"$out")"; return 1; }
  have=$(sed -n 1p <<<"$out")
  tlib=$(sed -n 2p <<<"$out")
  if [[ "$have" != "$want" ]]; then
    WHY="torch $have here, ${want:-none} in its MANIFEST"
    [[ "$any" == any ]] || return 1
    mismatch+="; $WHY"
  fi
  # Programs of other sources would not test this checkout (an edit after gpu-prebuild.sh).
  have=$(bash "$ROOT/scripts/gpu-prebuild.sh" --sources-hash)
  if [[ "$have" != "$(mget sources "$m")" ]]; then
    WHY="this checkout's sources (hash $have) are not those it was built from ($(mget sources "$m"))"
    [[ "$any" == any ]] || return 1
    mismatch+="; $WHY"
  fi
  if [[ "$GPU" != none ]]; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    archs=$(mget cuda_archs "$m")
    [[ -z "$cap" || " $archs " == *" $cap "* ]] ||
      { WHY="the GPU is sm_$cap, its programs have GPU code for ${archs:-none}"; return 1; }
  fi
  # DIR/lib first (what the node may lack), then torch's own (libtorch's RUNPATH finds these too).
  libpath=$dir/lib:$tlib
  for d in "$(dirname "$(dirname "$tlib")")"/nvidia/*/lib /usr/local/cuda/lib64; do
    [[ -d "$d" ]] && libpath+=:$d
  done
  wrap=$BUILD_DIR/prebuilt-bin
  rm -rf "$wrap" && mkdir -p "$wrap" || { WHY="cannot write $wrap"; return 1; }
  for p in $(mget binaries "$m"); do
    [[ -f "$dir/bin/$p" ]] || { WHY="its bin/$p is missing"; return 1; }
    [[ -x "$dir/bin/$p" ]] || chmod +x "$dir/bin/$p" || { WHY="its bin/$p is not executable"; return 1; }
    printf '#!/usr/bin/env bash\n# %s with the library path of its prebuilt folder (scripts/gpu-check.sh)\nexport LD_LIBRARY_PATH=%q${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\nexec %q "$@"\n' \
      "$p" "$libpath" "$dir/bin/$p" >"$wrap/$p" && chmod +x "$wrap/$p" || { WHY="cannot write $wrap/$p"; return 1; }
  done
  echo "prebuilt $dir: LD_LIBRARY_PATH=$libpath" >>"$OUT/build.log"
  LD_LIBRARY_PATH=$libpath ldd "$dir/bin/onebit_tests" >>"$OUT/build.log" 2>&1
  # Each starts with every symbol bound (LD_BIND_NOW): a library that does not fit fails here.
  for p in $(mget binaries "$m"); do
    out=$(LD_BIND_NOW=1 bash "$ROOT/scripts/gpu-prebuild.sh" --starts "$wrap/$p") ||
      { echo "$out" >>"$OUT/build.log"; WHY="its $p does not start: $(tail -1 <<<"$out")"; return 1; }
  done
  # The paths built into the programs point into the machine they were built on: these win.
  export ONEBIT_SOURCE_DIR=$ROOT ONEBIT_BENCH_PY_DIR=$ROOT/bench/py ONEBIT_BINARY_DIR=$BUILD_DIR ONEBIT_PYTHON=$PY
  export ONEBIT_SHARED=${ONEBIT_SHARED:-$(dirname "$ROOT")/shared}
  BIN=$wrap
  PREBUILT_REASON="$dir: commit $(mget commit "$m" | cut -c1-12)$([[ $(mget dirty "$m") == 1 ]] && echo " (dirty)"), built $(mget built "$m"), torch $want$mismatch"
}
prebuilt_result() {  # build step result for the prebuilt programs now in BIN
  say "prebuilt programs: $PREBUILT_REASON"
  echo "using the prebuilt programs of $PREBUILT_REASON" >>"$OUT/build.log"
  result build prebuilt $(( $(date +%s) - t )) "$PREBUILT_REASON" \
    "$("$PY" -c 'import json, sys; print(json.dumps({"prebuilt": dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)}))' "$PREBUILT/MANIFEST")"
}
PREBUILT=${GPU_CHECK_PREBUILT:-}
if [[ -z "$PREBUILT" && "${GPU_CHECK_SKIP_BUILD:-0}" != 1 && -f "$ROOT/.gpu-prebuilt/MANIFEST" ]]; then
  PREBUILT=$ROOT/.gpu-prebuilt
fi
[[ "$PREBUILT" == none ]] && PREBUILT=""
NOTE=""  # why the prebuilt programs were not used
if [[ -n "$PREBUILT" ]]; then
  WHY=""
  if use_prebuilt "$PREBUILT"; then
    prebuilt_result
  else
    NOTE="prebuilt $PREBUILT not used: $WHY"
    say "$NOTE"
    echo "$NOTE" >>"$OUT/build.log"
  fi
fi
if [[ -z "${ONEBIT_DEPS:-}" && -f "$ROOT/deps/MANIFEST" ]]; then export ONEBIT_DEPS=$ROOT/deps; fi
if [[ "$BIN" != "$BUILD_DIR" ]]; then
  :  # the prebuilt programs
elif [[ "${GPU_CHECK_SKIP_BUILD:-0}" == 1 ]]; then
  result build skipped 0 "${NOTE:+$NOTE; }GPU_CHECK_SKIP_BUILD=1: using $BUILD_DIR as it is"
elif limit=$(capped 300) && ((limit > 0)) && BUILD_DIR=$BUILD_DIR ONEBIT_PYTHON=$PY \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} timeout -k 15 "$limit" "$ROOT/scripts/setup.sh" >>"$OUT/build.log" 2>&1; then
  result build ok $(( $(date +%s) - t )) "$NOTE"
elif [[ -n "$PREBUILT" ]] && use_prebuilt "$PREBUILT" any; then  # better than nothing, and says so
  echo "setup.sh failed: $(tail -1 "$OUT/build.log")" >>"$OUT/build.log"
  PREBUILT_REASON="setup.sh failed, so despite the mismatch: $PREBUILT_REASON"
  prebuilt_result
else
  result build failed $(( $(date +%s) - t )) "${NOTE:+$NOTE; }setup.sh failed: $(tail -1 "$OUT/build.log")"
fi

# ---- the steps: each a function that writes OUT/<step>.json ----
# `rc` of the last run_step; timeouts (124, 137) and a spent budget (125) are not failures of the
# code under test, so they are not retried another way.
timed_out() { ((rc == 124 || rc == 125 || rc == 137)); }
# run_step NAME LIMIT CMD..., and after a failure that is not a timeout once more with the
# variables ENV ("A=1 B=0"), the first log kept as NAME_KEPT.log; rc: the last run's status.
run_step_or_fallback() {  # NAME LIMIT KEPT ENV CMD...
  local name=$1 limit=$2 kept=$3 env=$4
  shift 4
  run_step "$name" "$limit" "$@"
  rc=$?
  if ((rc != 0)) && ! timed_out; then
    mv "$OUT/$name.log" "$OUT/${name}_$kept.log"
    # shellcheck disable=SC2086,SC2163  # ENV splits into the assignments to export
    (export $env; run_step "$name" "$limit" "$@")
    rc=$?
  fi
}

# [cuda] tests. One process per test case (as ctest runs them): a kernel that faults poisons its
# CUDA context, which would fail every later case of the same process. ONEBIT_CTEST=1: a skip
# exits with 77 (and prints SKIPPED, which tells it from 77 failed assertions); --warn NoTests: a
# name that matches no test fails instead of passing.
step_cuda_tests() {
  local t name spec limit passed=0 failed=0 skipped=0 failures="" cuda_names counts
  t=$(date +%s)
  [[ -x "$BIN/onebit_tests" ]] || { result cuda_tests failed 0 "no $BIN/onebit_tests"; return; }
  : >"$OUT/cuda_tests.log"
  # Catch2 2.x lists names alone with --list-test-names-only (its exit status is the count), 3.x
  # with --list-tests --verbosity quiet.
  cuda_names=$("$BIN/onebit_tests" --list-test-names-only "[cuda]" 2>/dev/null)
  [[ -n "$cuda_names" ]] || cuda_names=$("$BIN/onebit_tests" --list-tests --verbosity quiet "[cuda]" 2>/dev/null)
  cuda_names=$(sed 's/^ *//; s/ *$//' <<<"$cuda_names")
  while IFS= read -r name; do
    [[ -z "$name" ]] && continue
    spec=$(sed 's/\\/\\\\/g; s/,/\\,/g; s/\[/\\[/g' <<<"$name")  # Catch2 test-spec escapes
    echo "=== $name" >>"$OUT/cuda_tests.log"
    limit=$(capped 120)
    if ((limit == 0)); then
      rc=125
      echo "out of time: GPU_CHECK_SECONDS=$GPU_CHECK_SECONDS is spent" >>"$OUT/cuda_tests.log"
    else
      ONEBIT_CTEST=1 timeout -k 15 "$limit" "$BIN/onebit_tests" --warn NoTests "$spec" >"$OUT/cuda_test.tmp" 2>&1
      rc=$?
      cat "$OUT/cuda_test.tmp" >>"$OUT/cuda_tests.log"
      ((rc == 77)) && ! grep -q "SKIPPED" "$OUT/cuda_test.tmp" && rc=1  # 77 failed assertions, not a skip
    fi
    echo "=== exit $rc" >>"$OUT/cuda_tests.log"
    if ((rc == 0)); then passed=$((passed + 1))
    elif ((rc == 77)); then skipped=$((skipped + 1))
    else failed=$((failed + 1)); failures+="${failures:+; }$name (exit $rc)"; fi
  done <<<"$cuda_names"
  rm -f "$OUT/cuda_test.tmp"
  counts="{\"total\": $((passed + failed + skipped)), \"passed\": $passed, \"failed\": $failed, \"skipped\": $skipped}"
  if ((failed == 0 && passed + skipped > 0)); then result cuda_tests ok $(( $(date +%s) - t )) "" "$counts"
  elif ((failed == 0)); then result cuda_tests failed $(( $(date +%s) - t )) "no [cuda] test found" "$counts"
  else result cuda_tests failed $(( $(date +%s) - t )) "failed: $failures (see cuda_tests.log)" "$counts"; fi
}

# A benchmark step whose program writes a JSON file: bench_step NAME LIMIT PROGRAM ARGS... --json FILE.
bench_step() {
  local name=$1 limit=$2 t
  t=$(date +%s)
  [[ -x "$3" ]] || { result "$name" failed 0 "no $3"; return; }
  if run_step "$name" "$limit" "${@:3}"; then
    rc=0
    result_from "$name" ok $(( $(date +%s) - t )) "" "$OUT/$name.out.json"
  else
    rc=$?
    result "$name" failed $(( $(date +%s) - t )) "exit $rc (see $name.log): $(tail -1 "$OUT/$name.log")"
  fi
}

# (a) LLaMA-7B-shaped distillation on one GPU.
step_distill_7b() {
  local shape=(--layers 32 --hidden 4096 --ffn 11008 --vocab 32000 --heads 32 --batch 4 --seq 2048)
  ((SMALL)) && shape=(--layers 2 --hidden 256 --ffn 688 --vocab 4000 --batch 2 --seq 128)
  bench_step distill_7b 300 "$BIN/bench-train-step" "${shape[@]}" --steps 3 --warmup 1 --device "$DEVICE" \
    --dtype bf16 --checkpointing 1 --latent-dtype bf16 --state-dtype int8 --peak-tflops "$PEAK" \
    --dir "$BUILD_DIR/gpu_check_teacher" --json "$OUT/distill_7b.out.json"
}

# (b) distillation step vs PyTorch + transformers, ~1B parameters.
step_distill_step() {
  local t ratios shape=(--layers 16 --hidden 2048 --ffn 5504 --vocab 32000 --batch 4 --seq 2048 --iters 5 --warmup 2)
  ((SMALL)) && shape=(--layers 2 --hidden 128 --ffn 344 --vocab 2000 --batch 2 --seq 64 --iters 2 --warmup 1)
  t=$(date +%s)
  if [[ ! -x "$BIN/bench-distill-step" ]]; then
    result distill_step failed 0 "no $BIN/bench-distill-step"
  elif ! "$PY" -c "import transformers" 2>/dev/null; then
    result distill_step skipped 0 "$PY has no transformers"
  elif run_step distill_step 240 "$BIN/bench-distill-step" "${shape[@]}" --device "$DEVICE" --dtype bf16 \
      --python "$PY" --dir "$BUILD_DIR/gpu_check_distill_step"; then
    ratios=$("$PY" - "$OUT/distill_step.log" <<'PY'
import json, re, sys
text = open(sys.argv[1], errors="replace").read()
r = {}
m = re.search(r"time, wall ms\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text)
if m: r.update(onebit_step_ms=float(m.group(1)), torch_step_ms=float(m.group(2)), step_time_ratio=float(m.group(3)))
m = re.search(r"peak step memory, MiB\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text)
if m: r.update(onebit_peak_mib=float(m.group(1)), torch_peak_mib=float(m.group(2)), peak_memory_ratio=float(m.group(3)))
print(json.dumps(r))
PY
)
    result distill_step ok $(( $(date +%s) - t )) "" "$ratios"
  else
    rc=$?
    result distill_step failed $(( $(date +%s) - t )) "exit $rc (see distill_step.log): $(tail -1 "$OUT/distill_step.log")"
  fi
}

# (c) NCCL at world size 1.
step_nccl() {
  bench_step nccl 120 "$BIN/bench-train-step" --layers 2 --hidden 256 --ffn 688 --vocab 4000 --batch 2 --seq 128 \
    --steps 2 --device "$DEVICE" --nccl --dir "$BUILD_DIR/gpu_check_nccl" --json "$OUT/nccl.out.json"
}

# (d) deployment benchmarks. bench-packed-gemv: the issue's three LLaMA-7B shapes at 1, 8 and 64
# rows against the device's copy bandwidth and dense bf16 (same run); bench-packed-decode: a
# random model of LLaMA-7B widths (8 of its 32 layers, to fit the time) exported to 1 bit against
# its bf16 model, bf16 first (it prints a JSON line after each dtype). Each runs whatever the
# other's outcome; the result is rewritten after each, so a check killed in the decode keeps the
# GEMV numbers.
step_deploy() {
  local t gemv decode notes="" ok=1
  t=$(date +%s)
  gemv=(--rows 1 8 64 --iters 20)
  decode=(--layers 8 --hidden 4096 --ffn 11008 --vocab 32000 --tokens 64 --repeats 3 --profile 12)
  if ((SMALL)); then
    gemv=(--rows 1 --iters 3 --cold-mb 32 --copy-mb 64)
    decode=(--layers 2 --hidden 256 --ffn 688 --vocab 4000 --tokens 8 --repeats 1 --profile 12)
  fi
  rm -f "$OUT/deploy_gemv.log" "$OUT/deploy_gemv_pdl.log" "$OUT/deploy_decode.log" "$OUT/deploy_decode_fused.log"
  if [[ -x "$BIN/bench-packed-gemv" ]]; then
    # (should programmatic launch fail inside its graphs: plain launches)
    run_step_or_fallback deploy_gemv 150 pdl "ONEBIT_CUDA_PDL=0" "$BIN/bench-packed-gemv" --device "$DEVICE" \
      "${gemv[@]}" --json
  else
    rc=127 && echo "no $BIN/bench-packed-gemv" >"$OUT/deploy_gemv.log"
  fi
  ((rc == 0)) || { ok=0; notes+="${notes:+; }GEMV exit $rc (see deploy_gemv.log)"; }
  deploy_result "$t" 0 "${notes:+$notes; }the decode benchmark did not finish (the check ended in it)"
  if [[ -x "$BIN/bench-packed-decode" ]]; then
    local cmd=("$BIN/bench-packed-decode" --device "$DEVICE" "${decode[@]}" --work "$BUILD_DIR/gpu_check_decode" --json)
    # (a fused kernel may have failed: the op sequences, plain launches)
    run_step_or_fallback deploy_decode 240 fused "ONEBIT_FUSED_OPS=0 ONEBIT_CUDA_PDL=0" "${cmd[@]}"
  else
    rc=127 && echo "no $BIN/bench-packed-decode" >"$OUT/deploy_decode.log"
  fi
  ((rc == 0)) || { ok=0; notes+="${notes:+; }decode exit $rc (see deploy_decode.log)"; }
  deploy_result "$t" "$ok" "$notes"
}
deploy_result() {  # start ok(1|0) reason: OUT/deploy.json from the logs so far
  local summary
  summary=$("$PY" - "$OUT/deploy_gemv.log" "$OUT/deploy_decode.log" "$OUT/deploy_decode_fused.log" \
    "$OUT/deploy_gemv_pdl.log" <<'PY'
import json, os, sys
def objects(path):
    out = []
    for line in open(path, errors="replace") if os.path.exists(path) else []:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out
gemv = [o for o in objects(sys.argv[1]) if o.get("bench") == "packed_gemv"]
decode = [o for o in objects(sys.argv[2]) if o.get("bench") == "packed_decode"]
# The fastest kernel per shape and row count.
best = {}
for o in gemv:
    k = (o["out"], o["in"], o["rows"])
    if k not in best or o["weight_gbs"] > best[k]["weight_gbs"]:
        best[k] = o
parts = [f"{o['out']}x{o['in']} x{o['rows']}: {o['kernel']} {o['weight_gbs']:.0f} GB/s = {o['pct_copy']:.0f}% of copy, "
         f"{o['speedup_bf16']:.1f}x bf16" for o in best.values()]
if os.path.exists(sys.argv[4]):
    parts.append("the GEMV benchmark FAILED (deploy_gemv_pdl.log): timed with ONEBIT_CUDA_PDL=0")
if os.path.exists(sys.argv[3]):
    parts.append("the decode benchmark FAILED (deploy_decode_fused.log): decoded with ONEBIT_FUSED_OPS=0 ONEBIT_CUDA_PDL=0")
if decode:
    d = decode[-1]
    for tag in ("bf16", "fp32"):
        if f"onebit_{tag}_tps" not in d:
            continue
        parts.append(f"decode ({d.get('decode', '?')}) {d[f'onebit_{tag}_tps']:.0f} vs {d[f'fp_{tag}_tps']:.0f} "
                     f"tokens/s {tag} = {d[f'speedup_{tag}']:.2f}x")
        if f"onebit_{tag}_dynamic_tps" in d:  # the eager path beside the graphs
            parts.append(f"eager {d[f'onebit_{tag}_dynamic_tps']:.0f} vs {d[f'fp_{tag}_dynamic_tps']:.0f} = "
                         f"{d[f'speedup_{tag}_dynamic']:.2f}x")
        if f"onebit_{tag}_nopdl_tps" in d:  # each kernel launched after the previous one ends
            parts.append(f"without programmatic launch {d[f'onebit_{tag}_nopdl_tps']:.0f} vs "
                         f"{d[f'fp_{tag}_nopdl_tps']:.0f} tokens/s")
        if f"onebit_{tag}_ungrouped_tps" in d:  # q/k/v and gate/up each called alone; then no fused ops either
            parts.append(f"1-bit with ungrouped projections {d[f'onebit_{tag}_ungrouped_tps']:.0f} tokens/s, "
                         f"with the op sequences too {d[f'onebit_{tag}_unfused_tps']:.0f}")
        break  # bf16, or fp32 where bf16 did not finish
    # Where a token's time goes (--profile): kernels launched and their time per token.
    for key, name in (("profile_onebit_bf16", "onebit"), ("profile_fp_bf16", "bf16")):
        dev = (d.get(key) or {}).get("gpu") or (d.get(key) or {}).get("cpu")
        if dev:
            unit = "kernels" if "gpu" in d[key] else "operators"
            parts.append(f"{name}: {dev['calls_per_token']:.0f} {unit}/token, {dev['us_per_token']:.0f} us")
print(json.dumps({"summary": "; ".join(parts), "gemv": gemv, "decode": decode[-1] if decode else None}))
PY
)
  if (($2)); then result deploy ok $(( $(date +%s) - $1 )) "" "$summary"
  else result deploy failed $(( $(date +%s) - $1 )) "$3" "$summary"; fi
}

# OUT/gpu-check.json and gpu-check.md from the steps so far; its exit status: 1 if a step failed.
report() {
  "$PY" - "$OUT/meta.json" $(( $(date +%s) - start )) <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1])); m["seconds"] = float(sys.argv[2])
json.dump(m, open(sys.argv[1] + ".tmp", "w")); os.replace(sys.argv[1] + ".tmp", sys.argv[1])
PY
  "$PY" "$ROOT/scripts/gpu_check_report.py" "$OUT"
}

for s in $ALL_STEPS; do
  [[ " $STEPS " == *" $s "* ]] || result "$s" skipped 0 "not in GPU_CHECK_STEPS=$STEPS"
done
report >/dev/null
for s in $STEPS; do
  say "step $s"
  rc=0
  "step_$s"
  report >/dev/null
done
report
