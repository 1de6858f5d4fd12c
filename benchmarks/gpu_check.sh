#!/usr/bin/env bash
# The GPU check: one script, one table, under 8 minutes on one H100/H200.
#   1. blip2_step at Flan-T5-XL size (EVA ViT-g, Q-Former, Flan-T5-XL with LoRA; frozen parts in bf16),
#      8 frames, the largest batch that fits, without and with gradient checkpointing: clips/s, peak
#      memory, MFU;
#   2. the caption demo (projects/demo/caption_synthetic.yaml) trained on one GPU for 200 steps: wall time;
#   3. the retrieval metrics at 100k texts x 100k videos on the GPU: time and peak extra memory;
#   4. decoding: the training loader's clips/s with 8 workers over 10 s 1280x720 H.264 videos.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#
# --dry-run: tiny sizes and a few steps on the CPU (what CI-less machines can check: the script runs end
# to end and prints its table). Results are written as JSON under --out (default output/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
out=output/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) out="$2"; shift ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VCAP_DATA_ROOT="${VCAP_DATA_ROOT:-$out/data}"

if [ $dry = 1 ]; then
  step_args=(--size tiny --frames 4 --batch 2 --steps 1 --device cpu --dtype fp32)
  demo_args=(run.max_iters=3 run.device=cpu run.num_workers=0 run.batch_size_train=4
             datasets.synthetic_caption.build_info.num_train=16 datasets.synthetic_caption.build_info.num_val=4
             datasets.synthetic_caption.build_info.num_test=4 datasets.synthetic_caption.build_info.num_frames=8)
  retrieval_args=(--sizes 2000 --device cpu)
  decode_args=(--videos 2 --seconds 2 --gop 60 --repeats 1 --workers 2)
else
  if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device is visible; use --dry-run on a CPU machine" >&2
    exit 2
  fi
  step_args=(--size flant5xl --frames 8 --batch auto --steps 5 --device cuda --dtype bf16)
  demo_args=(run.max_iters=200 run.device=cuda run.num_workers=8)
  retrieval_args=(--sizes 100000 --device cuda)
  decode_args=(--videos 16 --seconds 10 --gop 250 --repeats 1 --workers 8)
fi

t0=$(date +%s)
python benchmarks/blip2_step.py "${step_args[@]}" --out "$out/step.json"
python benchmarks/blip2_step.py "${step_args[@]}" --grad-checkpointing --out "$out/step_gc.json"

demo_start=$(date +%s.%N)
python train.py --cfg-path projects/demo/caption_synthetic.yaml --options "${demo_args[@]}" \
  run.output_dir="$out/demo" run.valid_splits=[] run.test_splits=[] run.log_freq=10 >"$out/demo.log" 2>&1 \
  || { tail -30 "$out/demo.log" >&2; exit 1; }
python - "$out" "$demo_start" <<'EOF'
import json, sys, time
out, start = sys.argv[1], float(sys.argv[2])
metrics = json.load(open(f"{out}/demo/metrics.json"))
json.dump({"wall_s": time.time() - start, "steps": metrics["steps"]}, open(f"{out}/demo.json", "w"))
EOF

python benchmarks/retrieval_eval.py "${retrieval_args[@]}" --out "$out/retrieval.json"
python benchmarks/decode.py --out "$out/videos" "${decode_args[@]}" --json "$out/decode.json"

python - "$out" "$(( $(date +%s) - t0 ))" <<'EOF'
import json, sys
out, total = sys.argv[1], int(sys.argv[2])
rows = []
for name in ("step", "step_gc"):
    r = json.load(open(f"{out}/{name}.json"))
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
    rows.append((f"blip2_step {r['size']}{' +grad ckpt' if r['grad_checkpointing'] else ''}",
                 f"batch {r['batch']} x {r['frames']} frames: {r['clips_per_s']:.1f} clips/s, {r['step_s']:.3f} s/step, "
                 f"peak {r['peak_mem_gib']:.1f} GiB, MFU {mfu} ({r['device']})"))
d = json.load(open(f"{out}/demo.json"))
rows.append(("caption demo", f"{d['steps']} steps in {d['wall_s']:.0f} s wall (data generation included)"))
for r in json.load(open(f"{out}/retrieval.json")):
    rows.append((f"retrieval {r['n']} x {r['n']}", f"{r['seconds']:.1f} s, peak extra {r['peak_extra_mb']:.0f} MB "
                 f"on {r['device']}"))
for gop, rates in json.load(open(f"{out}/decode.json")).items():
    loaders = ", ".join(f"{k.split('_')[1]} workers {v:.1f}" for k, v in rates.items() if k.startswith("loader_"))
    rows.append((f"decode {gop}", f"loader clips/s: {loaders}; pyav seek {rates['pyav_seek']:.1f} clips/s"))
width = max(len(k) for k, _ in rows)
print(f"\n{'check':<{width}}  result")
for k, v in rows:
    print(f"{k:<{width}}  {v}")
print(f"{'total':<{width}}  {total} s")
EOF
