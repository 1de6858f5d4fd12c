#!/usr/bin/env bash
# CLIP4Clip (meanP) on MSVD with the paper's recipe, NPROC GPUs (default 8: 8 x 16 = batch 128).
# Needs data/msvd from `vcap prepare msvd` and openai/clip-vit-base-patch32 in the Hugging Face cache.
NPROC=${NPROC:-8} exec "$(dirname "$0")/train_and_evaluate.sh" projects/clip4clip_msvd_meanP.yaml "$@"
