#!/usr/bin/env bash
# qwen2_5_vl_3b on MSR-VTT: zero-shot, then LoRA cross-entropy, then SCST on top (8 GPUs).
set -euo pipefail
NPROC=${NPROC:-8}
torchrun --nproc_per_node=$NPROC evaluate.py --cfg-path projects/video_llm/msrvtt_zeroshot_qwen2_5_vl_3b.yaml
torchrun --nproc_per_node=$NPROC train.py --cfg-path projects/video_llm/msrvtt_lora_qwen2_5_vl_3b.yaml
torchrun --nproc_per_node=$NPROC train.py --cfg-path projects/video_llm/msrvtt_scst_qwen2_5_vl_3b.yaml
