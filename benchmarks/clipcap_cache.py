"""CLIPCap training speed: samples per second from video vs from cached CLIP features.

Builds the tiny CLIPCap (and, with ``--vision b32``, a CLIP ViT-B/32-sized vision tower at 224 px,
randomly initialised: the same compute as the real one) on the generated synthetic videos, then
times training steps (forward, backward, AdamW) with the loader decoding video and with the
loader reading ``vcap extract-features``-style cached embeddings. One process, 0 workers.

    python benchmarks/clipcap_cache.py [--vision tiny b32] [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from vcap.project import build_config
from vcap.common.registry import registry
from vcap.datasets.datasets.base import CaptionEvalDataset, CaptionTrainDataset, collate, load_annotations
from vcap.datasets.features import FeatureStore, extract_features
from vcap.datasets.synthetic import SyntheticSpec, generate
from vcap.processors.text_processors import CaptionProcessor
from vcap.processors.tokenizer import WordTokenizer
from vcap.processors.video_processors import VideoEvalProcessor, VideoTrainProcessor

B32 = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
       "image_size": 224, "patch_size": 32, "projection_dim": 512}


def steps_per_second(model, loader, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    it = iter(loader)
    batch = next(it)  # warm-up
    model(batch)["loss"].backward()
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        n += len(batch["text_input"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", nargs="+", default=["tiny", "b32"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--data", default="data/bench_clipcap")
    args = p.parse_args()
    spec = SyntheticSpec(seed=0, num_train=120, num_val=10, num_test=10, num_frames=16, size=32, fps=8,
                         captions_per_video=5)
    root = generate(spec, Path(args.data) / spec.key())
    records = load_annotations(root / "annotations" / "train.json")
    tok_path = Path(tempfile.mkdtemp()) / "tok.json"
    WordTokenizer.train([c for r in records for c in r["captions"]]).save(tok_path)
    results = {}
    for vision in args.vision:
        size = 224 if vision == "b32" else 32
        model_cfg = {"arch": "clipcap", "model_type": "tiny", "tokenizer": str(tok_path), "mapper": "mlp"}
        if vision == "b32":
            model_cfg["clip_config"] = B32
        cfg = build_config(OmegaConf.create({"model": model_cfg, "datasets": {"synthetic_caption": {}},
                                             "run": {"task": "captioning", "output_dir": "o"}}))
        torch.manual_seed(0)
        model = registry.get_model_class("clipcap").from_config(cfg.model).train()
        train_proc = VideoTrainProcessor(args.frames, "rand", image_size=size)
        eval_proc = VideoEvalProcessor(args.frames, "uniform", size)
        video_ds = CaptionTrainDataset(records, root / "videos", train_proc, CaptionProcessor(), seed=0)
        cache = Path(tempfile.mkdtemp())
        t0 = time.perf_counter()
        extract_features(model, CaptionEvalDataset(records, root / "videos", eval_proc, CaptionProcessor()), cache,
                         "train", "bench")
        extract_s = time.perf_counter() - t0
        model.train()
        cached_ds = CaptionTrainDataset(records, root / "videos", train_proc, CaptionProcessor(), seed=0,
                                        features=FeatureStore(cache))
        loaders = {name: DataLoader(ds, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
                   for name, ds in (("video", video_ds), ("cache", cached_ds))}
        rate = {name: steps_per_second(model, loader, args.steps) for name, loader in loaders.items()}
        results[vision] = {"video_samples_per_s": rate["video"], "cache_samples_per_s": rate["cache"],
                           "speedup": rate["cache"] / rate["video"], "extract_s_120_videos": extract_s}
        print(f"{vision}: from video {rate['video']:.1f} samples/s, from cache {rate['cache']:.1f} samples/s "
              f"({rate['cache'] / rate['video']:.1f}x); extracting 120 videos took {extract_s:.1f}s", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
