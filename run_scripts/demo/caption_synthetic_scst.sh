#!/usr/bin/env bash
# SCST on the caption demo, from the best checkpoint of run_scripts/demo/caption_synthetic.sh (run it first).
exec "$(dirname "$0")/../train_and_evaluate.sh" projects/demo/caption_synthetic_scst.yaml \
    model.checkpoint=output/caption_synthetic/checkpoints/best.safetensors "$@"
