#!/usr/bin/env bash
# Prebuilt programs for scripts/gpu-check.sh, so that a short GPU window is not spent building:
#
#   scripts/gpu-prebuild.sh [DIR]      # DIR default: $ROOT/.gpu-prebuilt (ignored by git)
#
# From BUILD_DIR (default $ROOT/build; a CUDA build, i.e. nvcc was found at configure time):
#   DIR/bin       the programs gpu-check.sh runs (stripped copies; GPU_PREBUILD_STRIP=0 keeps symbols);
#   DIR/lib       the shared libraries they load that a GPU node may lack (yaml-cpp, sentencepiece,
#                 pcre2, ...): all but torch's (torch/lib, nvidia/*), CUDA's and the C/C++ runtime
#                 (glibc, libstdc++, libgcc_s), which the node has, in its torch or newer;
#   DIR/MANIFEST  key=value: torch (version of the linked LibTorch), commit, dirty, sources (a hash
#                 of the checkout's C++/CUDA/CMake files), nvcc, cuda_archs (the GPU code in the
#                 programs), date, binaries, libs.
# Carry DIR to the node with the checkout (git ignores it: e.g. carry [".gpu-prebuilt"]): gpu-check.sh
# runs these programs when the node's torch version and the checkout's sources hash are the
# MANIFEST's, and builds otherwise. `gpu-prebuild.sh --sources-hash` prints that hash,
# `gpu-prebuild.sh --starts PROGRAM` checks that a program starts (gpu-check.sh uses both).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The C++/CUDA sources and CMake files of the checkout (paths from ROOT, NUL-separated, sorted);
# more find tests in "$@" narrow them.
SOURCES=(onebit kernels bench tests train cmake CMakeLists.txt)
source_files() {
  (cd "$ROOT" && find "${SOURCES[@]}" -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \
    -o -name CMakeLists.txt -o -name '*.cmake' \) "$@" -print0 2>/dev/null | LC_ALL=C sort -z)
}
# Those files as one hash (names and contents).
sources_hash() { source_files | (cd "$ROOT" && xargs -0 sha256sum) | sha256sum | cut -c1-16; }
# Whether the program at $1 starts (with the caller's LD_LIBRARY_PATH, LD_BIND_NOW): onebit_tests
# lists its [cuda] tests (Catch2 2.x's --list-tests exits with their number: its output counts),
# the others print --help. On failure its output is printed.
program_starts() {
  local out
  if [[ "$(basename "$1")" == onebit_tests ]]; then
    out=$(timeout 60 "$1" --list-tests "[cuda]" 2>&1)
    grep -q "matching test case" <<<"$out"
  else
    out=$(timeout 60 "$1" --help 2>&1)
  fi || { printf '%s\n' "$out"; return 1; }
}
if [[ "${1:-}" == --sources-hash ]]; then sources_hash; exit; fi
if [[ "${1:-}" == --starts ]]; then program_starts "$2"; exit; fi
if [[ $# -gt 1 || "${1:-}" == -h || "${1:-}" == --help ]]; then
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
  [[ $# -le 1 ]]; exit $?
fi
die() { printf 'gpu-prebuild: error: %s\n' "$*" >&2; exit 1; }
say() { printf '\033[1m[gpu-prebuild]\033[0m %s\n' "$*" >&2; }

# The programs scripts/gpu-check.sh runs as $BIN/<name> (its test checks that this list covers them).
PROGRAMS=(onebit_tests bench-train-step bench-distill-step bench-packed-gemv bench-packed-decode)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
DIR=${1:-$ROOT/.gpu-prebuilt}
[[ -d "$BUILD_DIR" ]] || die "no build folder $BUILD_DIR (scripts/setup.sh makes one; or set BUILD_DIR)"
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
mkdir -p "$(dirname "$DIR")"
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
CACHE=$BUILD_DIR/CMakeCache.txt
[[ -f "$CACHE" ]] || die "$BUILD_DIR has no CMakeCache.txt (not a CMake build folder)"
for p in "${PROGRAMS[@]}"; do
  [[ -x "$BUILD_DIR/$p" ]] || die "$BUILD_DIR/$p is missing: build it first (ninja -C $BUILD_DIR ${PROGRAMS[*]})"
done
# The onebit_cuda target exists only when nvcc was found (CMakeLists.txt: ONEBIT_HAVE_CUDA).
[[ -f "$BUILD_DIR/libonebit_cuda.a" ]] && grep -q '^CMAKE_CUDA_COMPILER:[A-Z]*=.' "$CACHE" ||
  die "$BUILD_DIR is not a CUDA build (no libonebit_cuda.a / CMAKE_CUDA_COMPILER): configure where nvcc is found"

TMPD=$DIR.tmp
rm -rf "$TMPD"
trap 'rm -rf "$TMPD"' EXIT
mkdir -p "$TMPD/bin" "$TMPD/lib"
# Copies first: the build folder may be relinked meanwhile; everything below reads the copies.
for p in "${PROGRAMS[@]}"; do cp "$BUILD_DIR/$p" "$TMPD/bin/$p"; done

# The GPU code in a program: the architectures of the cubins (sm_XX) and PTX (compute_XX) in its
# .nv_fatbin section (the CMake cache's CMAKE_CUDA_ARCHITECTURES is not it: torch's
# TORCH_CUDA_ARCH_LIST -gencode flags decide).
cuda_archs() {  # program -> "80 90" (cubins), then "ptx:80" entries; empty without GPU code
  local fb=$TMPD/fatbin
  objcopy -O binary --only-section=.nv_fatbin "$1" "$fb" 2>/dev/null || { rm -f "$fb"; return 0; }
  python3 - "$fb" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
sass, ptx, off = set(), set(), 0
while off + 16 <= len(d):
    magic, _, hsize, size = struct.unpack_from("<IHHQ", d, off)
    if magic != 0xBA55ED50:  # fatbin headers are 8-byte aligned
        off += 8
        continue
    p, end = off + hsize, off + hsize + size
    while p + 32 <= end:
        kind, _, ehsize, esize = struct.unpack_from("<HHIQ", d, p)
        arch = struct.unpack_from("<I", d, p + 28)[0]
        (ptx if kind == 1 else sass).add(arch)
        p += ehsize + esize
    off = end
print(" ".join([str(a) for a in sorted(sass)] + [f"ptx:{a}" for a in sorted(ptx)]))
PY
  rm -f "$fb"
}
# Programs built before the environment overrides of the paths compiled in would look for this
# checkout on the node (bench/py there: a failed step; the tests' scratch folders: a stray path).
grep -q ONEBIT_BENCH_PY_DIR "$TMPD/bin/bench-distill-step" ||
  die "$BUILD_DIR/bench-distill-step predates ONEBIT_BENCH_PY_DIR (bench/python.h): rebuild it"
grep -q ONEBIT_BINARY_DIR "$TMPD/bin/onebit_tests" ||
  say "warning: $BUILD_DIR/onebit_tests predates ONEBIT_SOURCE_DIR/ONEBIT_BINARY_DIR (tests/support.h): rebuild it"
ARCHS=$(cuda_archs "$TMPD/bin/onebit_tests")
[[ -n "$ARCHS" ]] || die "$BUILD_DIR/onebit_tests has no CUDA kernels (.nv_fatbin): not a CUDA build"

# The shared libraries to carry: every one ldd resolves that is not torch's, CUDA's or the C/C++
# runtime's. torch's folder is the one libtorch.so comes from (its site-packages holds nvidia/*).
TORCH_LIB=""
declare -A LIBS=()
for p in "${PROGRAMS[@]}"; do
  out=$(ldd "$TMPD/bin/$p") || die "ldd $BUILD_DIR/$p failed"
  if grep -q "not found" <<<"$out"; then
    die "$BUILD_DIR/$p: $(grep "not found" <<<"$out" | head -1 | xargs) here"
  fi
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" && "$path" == /* ]] || continue
    real=$(realpath "$path")
    [[ "$name" == libtorch.so ]] && TORCH_LIB=$(dirname "$real")
    LIBS[$name]=$real
  done <<<"$out"
done
[[ -n "$TORCH_LIB" && -f "$TORCH_LIB/../version.py" ]] ||
  die "cannot tell the torch version: libtorch.so of $BUILD_DIR/onebit_tests is not in a torch package (${TORCH_LIB:-not linked})"
TORCH_PKG=$(cd "$TORCH_LIB/.." && pwd)
SITE=$(dirname "$TORCH_PKG")
carried=()
for name in $(printf '%s\n' "${!LIBS[@]}" | sort); do
  real=${LIBS[$name]}
  case "$real" in "$TORCH_PKG"/* | "$SITE"/nvidia/* | /usr/local/cuda* | /opt/cuda*) continue ;; esac
  case "$name" in
    ld-linux* | libc.so.* | libm.so.* | libmvec.so.* | libpthread.so.* | libdl.so.* | librt.so.* | \
      libutil.so.* | libresolv.so.* | libanl.so.* | libstdc++.so.* | libgcc_s.so.* | \
      libcuda.so.* | libnvidia-*) continue ;;
  esac
  cp "$real" "$TMPD/lib/$name"
  carried+=("$name")
done

STRIP=${GPU_PREBUILD_STRIP:-1}
if [[ "$STRIP" == 1 ]]; then
  for f in "$TMPD"/bin/* "$TMPD"/lib/*; do
    [[ -e "$f" ]] && { chmod u+w "$f"; strip --strip-unneeded "$f"; }
  done
  # Stripping keeps the GPU code and leaves the programs runnable (symbols resolved at start).
  [[ "$(cuda_archs "$TMPD/bin/onebit_tests")" == "$ARCHS" ]] || die "strip changed the CUDA kernels of onebit_tests"
fi
for p in "${PROGRAMS[@]}"; do
  out=$(LD_BIND_NOW=1 LD_LIBRARY_PATH="$TMPD/lib" program_starts "$TMPD/bin/$p") ||
    die "the copy of $p does not run: $(tail -1 <<<"$out")"
done

# Sources edited after the programs were linked: the programs may not be theirs.
oldest=$(for p in "${PROGRAMS[@]}"; do stat -c %Y "$BUILD_DIR/$p"; done | sort -n | head -1)
newer=$(source_files -newermt "@$oldest" | tr '\0' '\n')
[[ -z "$newer" ]] || say "warning: $(wc -l <<<"$newer") source files are newer than the oldest program ($(head -3 <<<"$newer" | xargs)...): rebuild first?"
git_commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
git_dirty=0
[[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]] && git_dirty=1
nvcc_bin=$(sed -n 's/^CMAKE_CUDA_COMPILER:[A-Z]*=//p' "$CACHE")
nvcc_version=$("$nvcc_bin" --version 2>/dev/null | sed -n 's/.*release [^,]*, V\(.*\)$/\1/p')
newest=$(for p in "${PROGRAMS[@]}"; do stat -c %Y "$BUILD_DIR/$p"; done | sort -n | tail -1)
{
  echo "torch=$(sed -n "s/^__version__ = '\(.*\)'$/\1/p" "$TORCH_PKG/version.py")"
  echo "torch_cuda=$(sed -n "s/^cuda.* = '\(.*\)'$/\1/p" "$TORCH_PKG/version.py")"
  echo "commit=$git_commit"
  echo "dirty=$git_dirty"
  echo "sources=$(sources_hash)"
  echo "nvcc=${nvcc_version:-unknown}"
  echo "cuda_archs=$ARCHS"
  echo "build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$CACHE")"
  echo "built=$(date -u -d "@$newest" +%FT%TZ)"
  echo "date=$(date -u +%FT%TZ)"
  echo "binaries=${PROGRAMS[*]}"
  echo "libs=${carried[*]}"
  echo "stripped=$STRIP"
} >"$TMPD/MANIFEST"
grep -q '^torch=.' "$TMPD/MANIFEST" || die "cannot read the torch version from $TORCH_PKG/version.py"

rm -rf "$DIR.old"
[[ -e "$DIR" ]] && mv "$DIR" "$DIR.old"
mv "$TMPD" "$DIR"
rm -rf "$DIR.old"
trap - EXIT
bytes=$(du -sb "$DIR" | cut -f1)
say "wrote $DIR: ${#PROGRAMS[@]} programs, ${#carried[@]} libraries (${carried[*]}), $((bytes / 1024 / 1024)) MiB ($bytes bytes; the working tree that travels to a node may hold 64 MiB)"
say "$(grep -E '^(torch|commit|dirty|cuda_archs)=' "$DIR/MANIFEST" | tr '\n' ' ')"
