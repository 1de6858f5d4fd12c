#!/usr/bin/env bash
# Seed 003's MSVD recipe: cross-entropy then SCST, 16 frames. NPROC GPUs (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-8}
torchrun --nproc_per_node="$NPROC" train.py --cfg-path projects/msvd_ft.yaml ${1+--options "$@"}
torchrun --nproc_per_node="$NPROC" train.py --cfg-path projects/msvd_scst.yaml \
    --options model.checkpoint=output/msvd_ft/checkpoints/best.safetensors "$@"
