#!/usr/bin/env bash
# The caption_synthetic demo: 2 CPU processes, generated data, about 5 minutes.
exec "$(dirname "$0")/../train_and_evaluate.sh" projects/demo/caption_synthetic.yaml "$@"
