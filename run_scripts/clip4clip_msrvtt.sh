#!/usr/bin/env bash
# CLIP4Clip on MSR-VTT 1k-A with the paper's recipe, on one node of NPROC GPUs (default 8: 8 x 16 = batch 128).
#   run_scripts/clip4clip_msrvtt.sh [meanP|seqLSTM|seqTransf|tightTransf] [key=value ...]
# Needs data/msrvtt from `vcap prepare msrvtt` and openai/clip-vit-base-patch32 in the Hugging Face cache.
set -euo pipefail
HEADER=${1:-meanP}
shift || true
NPROC=${NPROC:-8} exec "$(dirname "$0")/train_and_evaluate.sh" "projects/clip4clip_msrvtt_${HEADER}.yaml" "$@"
