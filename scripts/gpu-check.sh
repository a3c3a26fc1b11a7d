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
# 2. runs every [cuda] test;
# (a) a LLaMA-7B-shaped OneBit distillation from a random-weight teacher, 4 x 2048 tokens on ONE
#     GPU (bf16, gradient checkpointing, lean precision: bf16 latent W, int8 AdamW moments, frozen
#     tensors shared with the teacher): peak GPU memory,
#     tokens/s, MFU (8·N FLOPs per token against GPU_PEAK_TFLOPS, known for A100/H100/H200);
# (b) bench-distill-step (onebit vs PyTorch + transformers) at about 1B parameters;
# (c) the NCCL path at world size 1 (bench-train-step --nccl);
# (d) the deployment benchmarks: packed GEMV/GEMM kernels (bench-packed-gemv), decode (bench-packed-decode).
# Each step writes OUT_DIR/<step>.json; OUT_DIR/gpu-check.json and gpu-check.md sum them up.
# Without a GPU (or GPU_CHECK_SMALL=1) the same steps run at small CPU shapes, which is what CI
# checks. Knobs: BUILD_DIR (default build-gpu), JOBS, ONEBIT_PYTHON, GPU_PEAK_TFLOPS,
# GPU_CHECK_SECONDS (a budget for the whole check: steps past it are cut short or not run, and
# the report is still written).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -eq 1 && "$1" != -h && "$1" != --help ]] || { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; [[ $# -eq 1 ]]; exit $?; }
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
PY=${ONEBIT_PYTHON:-python3}
start=$(date +%s)
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

# ---- the machine ----
GPU=none
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
fi
SMALL=${GPU_CHECK_SMALL:-0}
[[ "$GPU" == none ]] && SMALL=1
DEVICE=cuda
[[ "$GPU" == none ]] && DEVICE=cpu
case "$GPU" in
  *H100*|*H200*|*H800*|*GH200*) PEAK_DEFAULT=989 ;;  # dense bf16, SXM
  *A100*|*A800*) PEAK_DEFAULT=312 ;;
  *) PEAK_DEFAULT=0 ;;
esac
PEAK=${GPU_PEAK_TFLOPS:-$PEAK_DEFAULT}
"$PY" - "$OUT/meta.json" "$GPU" "$(hostname)" "$(date -u +%FT%TZ)" <<'PY'
import json, sys
json.dump({"gpu": sys.argv[2], "host": sys.argv[3], "date": sys.argv[4]}, open(sys.argv[1], "w"))
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
# node's own tools keep their libraries); else returns 1 with the reason in WHY.
use_prebuilt() {
  local dir m want have tlib libpath d cap archs p wrap out
  dir=$(cd "$1" 2>/dev/null && pwd) || { WHY="no folder $1"; return 1; }
  m=$dir/MANIFEST
  [[ -f "$m" ]] || { WHY="$dir has no MANIFEST"; return 1; }
  want=$(mget torch "$m")
  out=$("$PY" -c 'import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>&1) ||
    { WHY="$PY cannot import torch: $(tail -1 <<<"$out")"; return 1; }
  have=$(sed -n 1p <<<"$out")
  tlib=$(sed -n 2p <<<"$out")
  [[ "$have" == "$want" ]] || { WHY="torch $have here, ${want:-none} in its MANIFEST"; return 1; }
  # Programs of other sources would not test this checkout (an edit after gpu-prebuild.sh).
  have=$(bash "$ROOT/scripts/gpu-prebuild.sh" --sources-hash)
  [[ "$have" == "$(mget sources "$m")" ]] ||
    { WHY="this checkout's sources (hash $have) are not those it was built from ($(mget sources "$m"))"; return 1; }
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
  PREBUILT_REASON="$dir: commit $(mget commit "$m" | cut -c1-12)$([[ $(mget dirty "$m") == 1 ]] && echo " (dirty)"), built $(mget built "$m"), torch $want"
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
    say "prebuilt programs: $PREBUILT_REASON"
    echo "using the prebuilt programs of $PREBUILT_REASON" >>"$OUT/build.log"
    result build prebuilt $(( $(date +%s) - t )) "$PREBUILT_REASON" \
      "$("$PY" -c 'import json, sys; print(json.dumps({"prebuilt": dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)}))' "$PREBUILT/MANIFEST")"
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
elif BUILD_DIR=$BUILD_DIR ONEBIT_PYTHON=$PY TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
    "$ROOT/scripts/setup.sh" >>"$OUT/build.log" 2>&1; then
  result build ok $(( $(date +%s) - t )) "$NOTE"
else
  result build failed $(( $(date +%s) - t )) "${NOTE:+$NOTE; }setup.sh failed: $(tail -1 "$OUT/build.log")"
fi

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
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
}

# ---- 2. [cuda] tests ----
# One process per test case (as ctest runs them): a kernel that faults poisons its CUDA context,
# which would fail every later case of the same process. ONEBIT_CTEST=1: a skip exits with 77;
# --warn NoTests: a name that matches no test fails instead of passing.
t=$(date +%s)
if [[ ! -x "$BIN/onebit_tests" ]]; then
  result cuda_tests failed 0 "no $BIN/onebit_tests"
else
  : >"$OUT/cuda_tests.log"
  passed=0 failed=0 skipped=0 failures=""
  # Catch2 2.x lists names alone with --list-test-names-only (its exit status is the count), 3.x
  # with --list-tests --verbosity quiet.
  cuda_names=$("$BIN/onebit_tests" --list-test-names-only "[cuda]" 2>/dev/null)
  [[ -n "$cuda_names" ]] || cuda_names=$("$BIN/onebit_tests" --list-tests --verbosity quiet "[cuda]" 2>/dev/null)
  cuda_names=$(sed 's/^ *//; s/ *$//' <<<"$cuda_names")
  while IFS= read -r name; do
    [[ -z "$name" ]] && continue
    spec=$(sed 's/\\/\\\\/g; s/,/\\,/g; s/\[/\\[/g' <<<"$name")  # Catch2 test-spec escapes
    echo "=== $name" >>"$OUT/cuda_tests.log"
    limit=$(capped 180)
    if ((limit == 0)); then
      rc=125
      echo "out of time: GPU_CHECK_SECONDS=$GPU_CHECK_SECONDS is spent" >>"$OUT/cuda_tests.log"
    else
      ONEBIT_CTEST=1 timeout "$limit" "$BIN/onebit_tests" --warn NoTests "$spec" >>"$OUT/cuda_tests.log" 2>&1
      rc=$?
    fi
    echo "=== exit $rc" >>"$OUT/cuda_tests.log"
    if ((rc == 0)); then passed=$((passed + 1))
    elif ((rc == 77)); then skipped=$((skipped + 1))
    else failed=$((failed + 1)); failures+="${failures:+; }$name (exit $rc)"; fi
  done <<<"$cuda_names"
  counts="{\"total\": $((passed + failed + skipped)), \"passed\": $passed, \"failed\": $failed, \"skipped\": $skipped}"
  if ((failed == 0 && passed + skipped > 0)); then result cuda_tests ok $(( $(date +%s) - t )) "" "$counts"
  elif ((failed == 0)); then result cuda_tests failed $(( $(date +%s) - t )) "no [cuda] test found" "$counts"
  else result cuda_tests failed $(( $(date +%s) - t )) "failed: $failures (see cuda_tests.log)" "$counts"; fi
fi

# ---- (a) LLaMA-7B-shaped distillation on one GPU ----
if ((SMALL)); then
  SHAPE=(--layers 2 --hidden 256 --ffn 688 --vocab 4000 --batch 2 --seq 128)
else
  SHAPE=(--layers 32 --hidden 4096 --ffn 11008 --vocab 32000 --heads 32 --batch 4 --seq 2048)
fi
t=$(date +%s)
if [[ ! -x "$BIN/bench-train-step" ]]; then
  result distill_7b failed 0 "no $BIN/bench-train-step"
elif run_step distill_7b 300 "$BIN/bench-train-step" "${SHAPE[@]}" --steps 3 --warmup 1 --device $DEVICE \
    --dtype bf16 --checkpointing 1 --latent-dtype bf16 --state-dtype int8 --peak-tflops "$PEAK" \
    --dir "$BUILD_DIR/gpu_check_teacher" \
    --json "$OUT/distill_7b.out.json"; then
  result_from distill_7b ok $(( $(date +%s) - t )) "" "$OUT/distill_7b.out.json"
else
  rc=$?
  result distill_7b failed $(( $(date +%s) - t )) "exit $rc (see distill_7b.log): $(tail -1 "$OUT/distill_7b.log")"
fi

# ---- (b) distillation step vs PyTorch + transformers, ~1B parameters ----
if ((SMALL)); then
  STEP=(--layers 2 --hidden 128 --ffn 344 --vocab 2000 --batch 2 --seq 64 --iters 2 --warmup 1)
else
  STEP=(--layers 16 --hidden 2048 --ffn 5504 --vocab 32000 --batch 4 --seq 2048 --iters 5 --warmup 2)
fi
t=$(date +%s)
if [[ ! -x "$BIN/bench-distill-step" ]]; then
  result distill_step failed 0 "no $BIN/bench-distill-step"
elif ! "$PY" -c "import transformers" 2>/dev/null; then
  result distill_step skipped 0 "$PY has no transformers"
elif run_step distill_step 240 "$BIN/bench-distill-step" "${STEP[@]}" --device $DEVICE --dtype bf16 --python "$PY" \
    --dir "$BUILD_DIR/gpu_check_distill_step"; then
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

# ---- (c) NCCL at world size 1 ----
t=$(date +%s)
if [[ ! -x "$BIN/bench-train-step" ]]; then
  result nccl failed 0 "no $BIN/bench-train-step"
elif run_step nccl 120 "$BIN/bench-train-step" --layers 2 --hidden 256 --ffn 688 --vocab 4000 --batch 2 --seq 128 \
    --steps 2 --device $DEVICE --nccl --dir "$BUILD_DIR/gpu_check_nccl" --json "$OUT/nccl.out.json"; then
  result_from nccl ok $(( $(date +%s) - t )) "" "$OUT/nccl.out.json"
else
  rc=$?
  result nccl failed $(( $(date +%s) - t )) "exit $rc (see nccl.log): $(tail -1 "$OUT/nccl.log")"
fi

# ---- (d) deployment benchmarks: the packed GEMV/GEMM kernels, decoding an export ----
# bench-packed-gemv: the issue's three LLaMA-7B shapes at 1 and 8 rows against the device's copy
# bandwidth and dense bf16 (same run); bench-packed-decode: a random model of LLaMA-7B widths
# (8 of its 32 layers, to fit the time) exported to 1 bit against its bf16 model.
t=$(date +%s)
if ((SMALL)); then
  GEMV=(--rows 1 --iters 3 --cold-mb 32 --copy-mb 64)
  DECODE=(--layers 2 --hidden 256 --ffn 688 --vocab 4000 --tokens 8 --repeats 1 --profile 12)
else
  GEMV=(--rows 1 8 64 --iters 20)
  DECODE=(--layers 8 --hidden 4096 --ffn 11008 --vocab 32000 --tokens 64 --repeats 3 --profile 12)
fi
DECODE_CMD=("$BIN/bench-packed-decode" --device $DEVICE "${DECODE[@]}" --work "$BUILD_DIR/gpu_check_decode" --json)
if [[ ! -x "$BIN/bench-packed-gemv" || ! -x "$BIN/bench-packed-decode" ]]; then
  result deploy failed 0 "no $BIN/bench-packed-gemv or bench-packed-decode"
elif run_step deploy_gemv 150 "$BIN/bench-packed-gemv" --device $DEVICE "${GEMV[@]}" --json &&
    { run_step deploy_decode 240 "${DECODE_CMD[@]}" ||
      { mv "$OUT/deploy_decode.log" "$OUT/deploy_decode_fused.log"  # a fused kernel failed: the op sequences
        ONEBIT_FUSED_OPS=0 run_step deploy_decode 240 "${DECODE_CMD[@]}"; }; }; then
  summary=$("$PY" - "$OUT/deploy_gemv.log" "$OUT/deploy_decode.log" "$OUT/deploy_decode_fused.log" <<'PY'
import json, os, sys
def objects(path):
    out = []
    for line in open(path, errors="replace"):
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
if os.path.exists(sys.argv[3]):
    parts.append("the fused decode kernels FAILED (deploy_decode_fused.log): decoded with ONEBIT_FUSED_OPS=0")
if decode:
    d = decode[-1]
    parts.append(f"decode ({d.get('decode', '?')}) {d['onebit_bf16_tps']:.0f} vs {d['fp_bf16_tps']:.0f} tokens/s bf16 = "
                 f"{d['speedup_bf16']:.2f}x")
    if "onebit_bf16_dynamic_tps" in d:  # the eager path beside the graphs
        parts.append(f"eager {d['onebit_bf16_dynamic_tps']:.0f} vs {d['fp_bf16_dynamic_tps']:.0f} = "
                     f"{d['speedup_bf16_dynamic']:.2f}x")
    if "onebit_bf16_ungrouped_tps" in d:  # q/k/v and gate/up each called alone; then no fused ops either
        parts.append(f"1-bit with ungrouped projections {d['onebit_bf16_ungrouped_tps']:.0f} tokens/s, "
                     f"with the op sequences too {d['onebit_bf16_unfused_tps']:.0f}")
    # Where a token's time goes (--profile): kernels launched and their time per token.
    for key, name in (("profile_onebit_bf16", "onebit"), ("profile_fp_bf16", "bf16")):
        dev = (d.get(key) or {}).get("gpu") or (d.get(key) or {}).get("cpu")
        if dev:
            unit = "kernels" if "gpu" in d[key] else "operators"
            parts.append(f"{name}: {dev['calls_per_token']:.0f} {unit}/token, {dev['us_per_token']:.0f} us")
print(json.dumps({"summary": "; ".join(parts), "gemv": gemv, "decode": decode[-1] if decode else None}))
PY
)
  result deploy ok $(( $(date +%s) - t )) "" "$summary"
else
  rc=$?
  result deploy failed $(( $(date +%s) - t )) "exit $rc (see deploy_gemv.log, deploy_decode.log)"
fi

"$PY" - "$OUT/meta.json" $(( $(date +%s) - start )) <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["seconds"] = float(sys.argv[2]); json.dump(m, open(sys.argv[1], "w"))
PY
"$PY" "$ROOT/scripts/gpu_check_report.py" "$OUT"
