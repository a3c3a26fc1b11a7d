#!/usr/bin/env bash
# onebit setup: installs what the build needs, then configures and builds. Idempotent.
#
#   scripts/setup.sh            # everything: apt packages, LibTorch, configure, build
#
# LibTorch, first match wins:
#   1. TORCH_DIR=/path/to/share/cmake/Torch or CMAKE_PREFIX_PATH=...   (your own LibTorch)
#   2. ONEBIT_PYTHON (or python3) that already imports torch >= 2.4     (GPU nodes)
#   3. a venv at ~/.cache/onebit/venv-torch-2.11.0 with torch==2.11.0 (made once)
# The tests' Python references (REF_PKGS, pinned) go into that Python on every path; with
# TORCH_DIR/CMAKE_PREFIX_PATH into a python3 with torch, else into the venv.
# Other knobs: BUILD_DIR (default build), BUILD_TYPE (Release), JOBS (nproc),
# ONEBIT_SKIP_APT=1 (no apt-get), ONEBIT_CACHE (default ~/.cache/onebit).
# Offline (no root, no network): ONEBIT_DEPS=DIR, a folder made by scripts/deps-bundle.sh,
# unpacks its .deb files into $ROOT/.deps (ONEBIT_DEPS_PREFIX) and builds against them;
# ONEBIT_DEPS_ONLY=1 stops after unpacking.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}
TORCH_VERSION=2.11.0
CACHE=${ONEBIT_CACHE:-$HOME/.cache/onebit}
VENV=$CACHE/venv-torch-$TORCH_VERSION
start=$(date +%s)
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# ---- 1. system packages (Debian 12, Ubuntu 22.04/24.04), or an offline bundle ----
DEPS_ONLY_PREFIX=""
DEPS_CMAKE_ARGS=()
if [[ -n "${ONEBIT_DEPS:-}" ]]; then
  DEPS_PREFIX=${ONEBIT_DEPS_PREFIX:-$ROOT/.deps}
  [[ -f "$ONEBIT_DEPS/MANIFEST" ]] || die "ONEBIT_DEPS=$ONEBIT_DEPS has no MANIFEST (make it with scripts/deps-bundle.sh)"
  say "unpacking $(wc -l <"$ONEBIT_DEPS/MANIFEST") packages of $ONEBIT_DEPS into $DEPS_PREFIX"
  mkdir -p "$DEPS_PREFIX"
  for deb in "$ONEBIT_DEPS"/*.deb; do dpkg-deb -x "$deb" "$DEPS_PREFIX" || die "cannot unpack $deb"; done
  # pkg-config files name /usr; point them at the prefix (CMake config files are relocatable).
  find "$DEPS_PREFIX" -name '*.pc' -exec sed -i "s|=/usr|=$DEPS_PREFIX/usr|g" {} +
  MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  DEPS_ONLY_PREFIX=$DEPS_PREFIX/usr  # added to CMake's prefix path beside torch's
  export PKG_CONFIG_PATH=$DEPS_PREFIX/usr/lib/$MULTIARCH/pkgconfig:$DEPS_PREFIX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export LD_LIBRARY_PATH=$DEPS_PREFIX/usr/lib/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  if ! command -v pkg-config >/dev/null && [[ -x "$DEPS_PREFIX/usr/bin/pkgconf" ]]; then
    export PKG_CONFIG=$DEPS_PREFIX/usr/bin/pkgconf
    DEPS_CMAKE_ARGS=(-DPKG_CONFIG_EXECUTABLE="$PKG_CONFIG")
  fi
  [[ "${ONEBIT_DEPS_ONLY:-0}" == 1 ]] && { say "unpacked into $DEPS_PREFIX"; exit 0; }
  ONEBIT_SKIP_APT=1
fi
# libgloo-dev: the gloo headers that c10d's ProcessGroupGloo.hpp includes (multi-process CPU
# runs and the [dist] tests); checked after this step.
APT_PKGS=(build-essential cmake ninja-build pkg-config ccache git python3 python3-venv python3-pip
          libyaml-cpp-dev catch2 nlohmann-json3-dev libcli11-dev libsentencepiece-dev libpcre2-dev libgloo-dev)
if [[ "${ONEBIT_SKIP_APT:-0}" != 1 ]] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    say "installing apt packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# Without the gloo headers onebit would build without the Gloo backend and the [dist] tests
# would only skip; ONEBIT_ALLOW_NO_GLOO=1 accepts that (e.g. a GPU node that uses NCCL only).
if [[ "${ONEBIT_ALLOW_NO_GLOO:-0}" != 1 ]] && ! [[ -n "$DEPS_ONLY_PREFIX" && -f "$DEPS_ONLY_PREFIX/include/gloo/config.h" ]] &&
   ! echo '#include <gloo/config.h>' | c++ -E -x c++ - >/dev/null 2>&1; then
  die "the gloo headers (gloo/config.h) are missing: apt-get install libgloo-dev (c10d's Gloo backend, the [dist] tests), or set ONEBIT_ALLOW_NO_GLOO=1 to build without them"
fi

# ---- 2. LibTorch ----
torch_ok() {  # $1 = python; prints the cmake prefix when it has torch >= 2.4
  "$1" - <<'PY' 2>/dev/null
import torch, torch.utils
major, minor = (int(x) for x in torch.__version__.split(".")[:2])
assert (major, minor) >= (2, 4), torch.__version__
print(torch.utils.cmake_prefix_path)
PY
}
# Python packages the tests use as references (transformers models, tokenizers, lm-eval,
# the SmolLM2 GGUF conversion), pinned and installed on every path below.
REF_PKGS=(transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6 sentencepiece==0.2.3 protobuf==7.36.2
          tokenizers==0.23.3 gguf==0.19.0 accelerate==1.15.0 pyarrow==26.0.1 lm_eval==0.4.13
          pyyaml==6.0.4 matplotlib==3.11.2)  # the last two: onebit-sweep / onebit-report
refs_ok() {  # $1 = python; true when every pinned reference package is installed
  "$1" - "${REF_PKGS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
PY
}
make_venv() {  # the torch venv, made once per machine
  if ! torch_ok "$VENV/bin/python" >/dev/null; then
    say "creating $VENV with torch==$TORCH_VERSION (about 1 minute, 4.6 GB, once per machine)"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
    torch_ok "$VENV/bin/python" >/dev/null || die "torch install in $VENV failed"
  fi
}
PYTHON=""
PREFIX=""
if [[ -n "${TORCH_DIR:-}" ]]; then
  say "using TORCH_DIR=$TORCH_DIR"
elif [[ -n "${CMAKE_PREFIX_PATH:-}" ]]; then
  say "using CMAKE_PREFIX_PATH=$CMAKE_PREFIX_PATH"
else
  for cand in "${ONEBIT_PYTHON:-}" python3; do
    [[ -n "$cand" ]] && command -v "$cand" >/dev/null || continue
    if PREFIX=$(torch_ok "$cand"); then PYTHON=$(command -v "$cand"); break; fi
  done
  if [[ -z "$PREFIX" ]]; then
    make_venv
    PREFIX=$(torch_ok "$VENV/bin/python")
    PYTHON=$VENV/bin/python
  fi
  say "using torch from $PYTHON"
fi
# The references need a Python with torch also when LibTorch comes from TORCH_DIR.
REF_PYTHON=$PYTHON
if [[ -z "$REF_PYTHON" ]]; then
  for cand in "${ONEBIT_PYTHON:-}" python3; do
    [[ -n "$cand" ]] && command -v "$cand" >/dev/null && torch_ok "$cand" >/dev/null &&
      { REF_PYTHON=$(command -v "$cand"); break; }
  done
  [[ -n "$REF_PYTHON" ]] || { make_venv; REF_PYTHON=$VENV/bin/python; }
fi
if ! refs_ok "$REF_PYTHON" && [[ -n "${ONEBIT_DEPS:-}" ]]; then
  say "offline (ONEBIT_DEPS): not installing the test references ${REF_PKGS[*]}; their tests skip"
elif ! refs_ok "$REF_PYTHON"; then
  say "installing the test references into $REF_PYTHON: ${REF_PKGS[*]}"
  "$REF_PYTHON" -m pip install -q "${REF_PKGS[@]}" ||
    say "warning: could not install the references; their tests skip (fail under ONEBIT_REQUIRE_REFERENCES=1)"
fi

# The PyPI wheel's Torch config is CUDA-enabled and needs a CUDA toolkit at configure time.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
if [[ -n "$PYTHON" ]] && ! command -v nvcc >/dev/null; then
  if "$PYTHON" -c "import torch,sys; sys.exit(0 if torch.version.cuda else 1)"; then
    die "this torch is a CUDA build, whose CMake config needs a CUDA toolkit (nvcc) at configure time; install the CUDA toolkit, or point TORCH_DIR at a CPU-only LibTorch"
  fi
fi

# ---- 3. configure + build ----
CMAKE_ARGS=(-S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE")
command -v ninja >/dev/null && [[ ! -f "$BUILD_DIR/CMakeCache.txt" || -f "$BUILD_DIR/build.ninja" ]] && CMAKE_ARGS+=(-G Ninja)
[[ -n "$DEPS_ONLY_PREFIX" ]] && PREFIX=${PREFIX:+$PREFIX;}$DEPS_ONLY_PREFIX
[[ -n "$PREFIX" ]] && CMAKE_ARGS+=(-DCMAKE_PREFIX_PATH="$PREFIX")
CMAKE_ARGS+=("${DEPS_CMAKE_ARGS[@]}")
[[ -n "${TORCH_DIR:-}" ]] && CMAKE_ARGS+=(-DTorch_DIR="$TORCH_DIR")
[[ -n "$REF_PYTHON" ]] && CMAKE_ARGS+=(-DONEBIT_PYTHON="$REF_PYTHON")
if command -v ccache >/dev/null; then
  CMAKE_ARGS+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  export CCACHE_BASEDIR=$ROOT
fi
say "configuring $BUILD_DIR"
mkdir -p "$BUILD_DIR"
LOG=$BUILD_DIR/configure.log
cmake "${CMAKE_ARGS[@]}" >"$LOG" 2>&1 || { tail -30 "$LOG" >&2; die "cmake configure failed (log: $LOG)"; }
say "building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
say "ready in $(( $(date +%s) - start )) s: binaries in $BUILD_DIR"
