#!/usr/bin/env bash
# Quickstart on a fresh machine, nothing downloaded: build, then pretrain a tiny teacher on
# the synthetic language, distill it to OneBit and print teacher / OneBit / naive 1-bit
# perplexity on held-out stories. Extra args go to onebit-train (e.g. train.max_steps=100).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
exec "$BUILD_DIR/onebit-train" --config configs/quickstart.yaml "$@"
