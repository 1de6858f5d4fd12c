#!/usr/bin/env bash
# Seed 003's MSR-VTT recipe: cross-entropy (8 frames, MSR-VTT mixed with WebVid-2M at 1 : 7), then SCST
# (16 frames) from its best checkpoint, then the test metrics. NPROC GPUs (default 8); extra arguments go to
# --options of every step. Without WebVid: FT=msrvtt_ft_msrvtt_only run_scripts/blip2_msrvtt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-8}
FT=${FT:-msrvtt_ft}
torchrun --nproc_per_node="$NPROC" train.py --cfg-path "projects/$FT.yaml" ${1+--options "$@"}
torchrun --nproc_per_node="$NPROC" train.py --cfg-path projects/msrvtt_scst.yaml \
    --options "model.checkpoint=output/$FT/checkpoints/best.safetensors" "$@"
torchrun --nproc_per_node="$NPROC" evaluate.py --cfg-path projects/msrvtt_eval.yaml \
    --options model.checkpoint=output/msrvtt_scst/checkpoints/best.safetensors "$@"
