#!/usr/bin/env bash
# Train a project with torchrun, then recompute its test metrics from the best checkpoint.
#   run_scripts/train_and_evaluate.sh projects/demo/caption_synthetic.yaml [key=value ...]
# NPROC (default 2) processes; OUT (default output/<project name>) is the run directory.
# Extra arguments are passed on as --options, e.g. datasets.synthetic_caption.build_info.seed=7
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=${1:?usage: $0 PROJECT.yaml [key=value ...]}
shift
NPROC=${NPROC:-2}
OUT=${OUT:-output/$(basename "$PROJECT" .yaml)}
torchrun --standalone --nproc_per_node="$NPROC" train.py --cfg-path "$PROJECT" \
    --options run.output_dir="$OUT" "$@"
torchrun --standalone --nproc_per_node="$NPROC" evaluate.py --cfg-path "$PROJECT" \
    --options run.output_dir="$OUT" model.checkpoint="$OUT/checkpoints/best.safetensors" "$@"
