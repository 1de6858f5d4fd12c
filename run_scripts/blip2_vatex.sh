#!/usr/bin/env bash
# Seed 003's VATEX recipe: cross-entropy, 8 frames. NPROC GPUs (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
torchrun --nproc_per_node="${NPROC:-8}" train.py --cfg-path projects/vatex_ft.yaml ${1+--options "$@"}
