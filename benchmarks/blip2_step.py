"""BLIP-2 video captioner training step: time, clips/s, peak memory, and model FLOPs utilisation.

Random weights in the real shapes (the compute is the same as the pretrained model's), built as
training builds them: the frozen ViT and LLM constructed directly in ``model.frozen_dtype`` (bf16 on
a GPU; ``--frozen-dtype``), what trains in fp32. A word tokenizer stands in for the LLM's (only its
vocabulary size matters here); random pixels and captions of ``--caption-tokens`` tokens. One step =
forward, backward, AdamW on what trains.

    python benchmarks/blip2_step.py --size tiny --frames 4 --batch 8            # CPU smoke numbers
    python benchmarks/blip2_step.py --size flant5xl --frames 8 --batch 8 --device cuda --dtype bf16
    python benchmarks/blip2_step.py --size flant5xl --frames 8 --batch 1 --device cpu --frozen-dtype bf16 --steps 1

FLOPs are counted by torch's FlopCounterMode over one real step (matmuls and attention, forward and
backward as executed: the frozen ViT runs forward only, the frozen LLM back-propagates to its inputs
only); MFU = counted FLOPs / step time / the device's dense bf16 peak (given by ``--peak-tflops`` or
looked up for H100/H200/A100).
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vcap.models.blip2.blip2_opt import Blip2OPTVideo
from vcap.models.blip2.blip2_t5 import Blip2T5Video
from vcap.processors.tokenizer import WordTokenizer

EVA_VIT_G = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                 image_size=224, patch_size=14, qkv_bias=True, layer_norm_eps=1e-6)
QFORMER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               cross_attention_frequency=2)
SIZES = {
    "tiny": ("t5", dict(vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=32, patch_size=4),
                        qformer_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4),
                        text_config=dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4)), 8, 1000),
    # the medium CPU configuration issue 17 compared with LAVIS at: ViT 384x6, Q-Former 384x4, OPT 512x4
    "medium_opt": ("opt", dict(vision_config=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                                                  num_attention_heads=6, image_size=224, patch_size=14),
                               qformer_config=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4,
                                                   num_attention_heads=6, cross_attention_frequency=2),
                               text_config=dict(hidden_size=512, ffn_dim=2048, num_hidden_layers=4,
                                                num_attention_heads=8, word_embed_proj_dim=512,
                                                max_position_embeddings=512)), 32, 50272),
    # Flan-T5-XL: 24 + 24 layers, d_model 2048, gated-GELU FFN 5120, 32 heads of 64; vocabulary 32128
    "flant5xl": ("t5", dict(vision_config=EVA_VIT_G, qformer_config=QFORMER,
                            text_config=dict(d_model=2048, d_ff=5120, d_kv=64, num_layers=24, num_heads=32,
                                             feed_forward_proj="gated-gelu", tie_word_embeddings=False)), 32, 32128),
    # OPT-2.7B: 32 layers, 2560 wide, FFN 10240, 32 heads; vocabulary 50272
    "opt2.7b": ("opt", dict(vision_config=EVA_VIT_G, qformer_config=QFORMER,
                            text_config=dict(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32,
                                             num_attention_heads=32, word_embed_proj_dim=2560,
                                             max_position_embeddings=2048)), 32, 50272),
}
AUTO_BATCHES = (128, 96, 64, 48, 32, 24, 16, 8, 4, 2, 1)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def vocab_tokenizer(size: int) -> WordTokenizer:
    words = [f"w{i}" for i in range(size - 8)]
    return WordTokenizer.train([" ".join(words)] + ["a video of"])


def build(size: str, frames: int, lora: bool, grad_ckpt: bool, fusion: str, frozen_dtype: str = "auto"):
    lm, cfg, queries, vocab = SIZES[size]
    tok = vocab_tokenizer(vocab)
    path = f"/tmp/blip2_step_tok_{size}.json"
    tok.save(path)
    cls = Blip2T5Video if lm == "t5" else Blip2OPTVideo
    real = size != "tiny"
    return cls(tokenizer=path, blip2_config=cfg, num_query_tokens=queries, frame_fusion=fusion,
               temporal_embedding=False, max_frames=max(frames, 32), freeze_vit=real, freeze_llm=real,
               grad_checkpointing=grad_ckpt, frozen_dtype=frozen_dtype,
               lora={"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q", "v"] if lm == "t5" else
                     ["q_proj", "v_proj"]} if lora and real else None), tok


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch", default="8", help="clips per step, or 'auto': the largest of "
                   f"{AUTO_BATCHES} that fits in the GPU's memory")
    p.add_argument("--caption-tokens", type=int, default=16)
    p.add_argument("--fusion", choices=["concat_tokens", "concat_queries"], default="concat_tokens")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--no-lora", action="store_true")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--frozen-dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="model.frozen_dtype (auto: bf16 with CUDA, fp32 on the CPU)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (with --batch auto: at least 1)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting step (no MFU)")
    p.add_argument("--build-only", action="store_true", help="report the build's time and peak memory only")
    p.add_argument("--peak-tflops", type=float, help="the device's dense peak for --dtype (default: looked up)")
    p.add_argument("--out", help="also write the result as JSON here")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    t_build = time.perf_counter()
    with device:  # parameters created where they run: a 4B-parameter model is not initialised on the CPU first
        model, tok = build(args.size, args.frames, not args.no_lora, args.grad_checkpointing, args.fusion,
                           args.frozen_dtype)
    t_build = time.perf_counter() - t_build
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    frozen = sorted({str(prm.dtype) for prm in model.parameters() if not prm.requires_grad}) or ["none"]
    built = {"size": args.size, "frozen_dtype": ",".join(frozen), "build_s": t_build,
             "peak_rss_after_build_gib": rss_built,
             "params_total_M": sum(prm.numel() for prm in model.parameters()) / 1e6}
    if args.build_only:
        print(json.dumps(built, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(built, f, indent=1)
        return built
    model.to(device).train()
    image = model.vision_model.config.image_size
    words = " ".join(["w1"] * (args.caption_tokens - 1))
    trainable = [prm for prm in model.parameters() if prm.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    batch = {}

    def step():
        with autocast:
            loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    candidates = [int(args.batch)] if args.batch != "auto" else list(AUTO_BATCHES)
    for size in candidates:
        batch.update(video=torch.randn(size, args.frames, 3, image, image, device=device), text_input=[words] * size)
        if args.warmup == 0 and len(candidates) == 1:
            args.batch = size
            break
        try:
            for _ in range(max(1, args.warmup)):
                step()  # warm-up (allocations, kernels); with --batch auto also the test of whether it fits
            args.batch = size
            break
        except torch.cuda.OutOfMemoryError:
            if size == candidates[-1]:
                raise
            opt.zero_grad(set_to_none=True)
            batch.clear()
            torch.cuda.empty_cache()
            print(f"batch {size}: out of memory", flush=True)
    flops = None
    if not args.no_flops:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    sec = times[len(times) // 2]
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS
        name, peak = f"CPU ({torch.get_num_threads()} threads)", args.peak_tflops
    result = {
        "size": args.size, "frames": args.frames, "batch": args.batch, "fusion": args.fusion, "dtype": args.dtype,
        "lora": not args.no_lora, "grad_checkpointing": args.grad_checkpointing, "device": name,
        **built,
        "params_trained_M": sum(prm.numel() for prm in trainable) / 1e6,
        "step_s": sec, "clips_per_s": args.batch / sec, "tflops_per_step": flops / 1e12 if flops else None,
        "achieved_tflops": flops / sec / 1e12 if flops else None,
        "mfu": flops / sec / 1e12 / peak if peak and flops else None,
        "peak_mem_gib": peak_mem,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
