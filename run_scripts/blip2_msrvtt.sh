#!/usr/bin/env bash
# Seed 003's MSR-VTT recipe: cross-entropy (8 frames), then SCST (16 frames) from its best checkpoint,
# then the test metrics. NPROC GPUs (default 8); extra arguments go to --options of every step.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-8}
torchrun --nproc_per_node="$NPROC" train.py --cfg-path projects/msrvtt_ft.yaml ${1+--options "$@"}
torchrun --nproc_per_node="$NPROC" train.py --cfg-path projects/msrvtt_scst.yaml \
    --options model.checkpoint=output/msrvtt_ft/checkpoints/best.safetensors "$@"
torchrun --nproc_per_node="$NPROC" evaluate.py --cfg-path projects/msrvtt_eval.yaml \
    --options model.checkpoint=output/msrvtt_scst/checkpoints/best.safetensors "$@"
