"""Decoding speed: 8-frame ``uniform`` clips from 30-second 1280x720 H.264 videos.

Compares PyAV with seeking (vcap's default), PyAV decoding sequentially up to the last wanted
frame, and decord (through vcap's wrapper and raw); then the training loader's clips per second
with 0, 1 and 2 workers. The videos are generated on first use (smooth moving content, 30 fps,
keyframe interval ``--gop``: 250 is x264's default, 60 a 2-second GOP as streaming sites use).

    python benchmarks/decode.py --out data/bench_decode [--gop 250 60] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vcap.processors.video_io import decord_available, read_frames, write_video


def make_video(path: Path, seconds: int, fps: int, width: int, height: int, gop: int, seed: int) -> None:
    """Moving gradients and a few moving discs: content an encoder has to work on, no noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centres = rng.uniform(0, 1, (4, 2)) * (width, height)
    speeds = rng.uniform(-6, 6, (4, 2))
    colours = rng.integers(0, 255, (4, 3))
    frames = np.empty((seconds * fps, height, width, 3), np.uint8)
    for t in range(len(frames)):
        base = np.stack([(xx + 3 * t) % 256, (yy + 2 * t) % 256, ((xx + yy) / 2 + t) % 256], -1)
        for (cx, cy), (vx, vy), col in zip(centres, speeds, colours):
            x, y = (cx + vx * t) % width, (cy + vy * t) % height
            base[(xx - x) ** 2 + (yy - y) ** 2 < 60**2] = col
        frames[t] = base.astype(np.uint8)
    write_video(path, frames, fps, options={"preset": "veryfast", "crf": "23"}, gop=gop)


def clips_per_second(fn, paths, repeats: int) -> float:
    fn(paths[0])  # warm-up (imports, codec initialisation)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return statistics.median(rates)


def decode_methods(paths, repeats: int, num_frames: int) -> dict[str, float]:
    methods = {
        "pyav_seek": lambda p: read_frames(p, num_frames, "uniform"),
        "pyav_sequential": lambda p: read_frames(p, num_frames, "uniform", seek=False),
    }
    if decord_available():
        import decord

        def raw_decord(p):
            reader = decord.VideoReader(str(p), num_threads=1)
            n = len(reader)
            return reader.get_batch([int((i + 0.5) * n / num_frames) for i in range(num_frames)]).asnumpy()

        methods["decord_vcap"] = lambda p: read_frames(p, num_frames, "uniform", backend="decord")
        methods["decord_raw"] = raw_decord
    return {name: clips_per_second(fn, paths, repeats) for name, fn in methods.items()}


def loader_rates(paths, num_frames: int, workers: list[int]) -> dict[str, float]:
    from torch.utils.data import DataLoader

    from vcap.datasets.datasets.base import CaptionTrainDataset
    from vcap.processors.text_processors import CaptionProcessor
    from vcap.processors.video_processors import VideoTrainProcessor

    records = [{"video_id": p.stem, "video": p.name, "captions": [f"caption {k}" for k in range(4)]} for p in paths]
    dataset = CaptionTrainDataset(records, paths[0].parent, VideoTrainProcessor(num_frames, "rand", image_size=224),
                                  CaptionProcessor(), seed=0)
    out = {}
    for w in workers:
        loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=w, drop_last=True)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += batch["video"].shape[0]
        out[f"loader_{w}_workers"] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/bench_decode", help="where the generated videos go")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--gop", type=int, nargs="+", default=[250, 60])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", help="also write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for gop in args.gop:
        folder = Path(args.out) / f"gop{gop}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"v{i}.mp4" for i in range(args.videos)]
        todo = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
        if todo:  # one process per video: encoding 16 of them one after another took 6 of the GPU check's 8.5 min
            t0 = time.perf_counter()
            with ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
                list(pool.map(make_video, [p.with_suffix(".tmp.mp4") for _, p in todo], *zip(*[
                    (args.seconds, 30, 1280, 720, gop, i) for i, _ in todo])))
            for _, p in todo:
                p.with_suffix(".tmp.mp4").rename(p)
            print(f"generated {len(todo)} videos in {time.perf_counter() - t0:.1f}s", flush=True)
        rates = decode_methods(paths, args.repeats, args.frames)
        rates["seek_over_sequential"] = rates["pyav_seek"] / rates["pyav_sequential"]
        if "decord_raw" in rates:
            rates["seek_over_decord_raw"] = rates["pyav_seek"] / rates["decord_raw"]
        rates.update(loader_rates(paths, args.frames, args.workers))
        results[f"gop{gop}"] = rates
        print(f"gop {gop}: " + ", ".join(f"{k}={v:.2f}" for k, v in rates.items()), flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
