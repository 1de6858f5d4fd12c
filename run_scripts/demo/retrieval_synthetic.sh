#!/usr/bin/env bash
# Train the retrieval_synthetic demo on this machine's CPU cores (or GPUs), then recompute its test metrics.
# Extra arguments are passed on as --options, e.g. datasets.synthetic_retrieval.build_info.seed=7
set -euo pipefail
cd "$(dirname "$0")/../.."
NPROC=${NPROC:-2}
OUT=${OUT:-output/demo/retrieval_synthetic}
torchrun --standalone --nproc_per_node="$NPROC" train.py --cfg-path projects/demo/retrieval_synthetic.yaml \
    --options run.output_dir="$OUT" "$@"
torchrun --standalone --nproc_per_node="$NPROC" evaluate.py --cfg-path projects/demo/retrieval_synthetic.yaml \
    --options run.output_dir="$OUT" model.checkpoint="$OUT/checkpoints/best.safetensors" "$@"
