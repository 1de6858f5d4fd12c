"""Time and size of `vcap report` at MSR-VTT's test size: 2990 generated videos (the synthetic generator's
shapes, 16 frames, 20 captions each) read by the custom_caption builder, a captioning run's files around them (config.yaml, results/test.json, metrics.json, a log.jsonl of 3000 steps),
then write_report. Prints seconds, the report's size and its file count.

    python benchmarks/report_scale.py [--videos 2990] [--size 64] [--workers N] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=2990)
    ap.add_argument("--size", type=int, default=64, help="frame size of the generated videos")
    ap.add_argument("--workers", type=int, default=None, help="thumbnail processes (default: the cores)")
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    from omegaconf import OmegaConf

    from vcap.project import build_config
    from vcap.datasets.synthetic import ALL_ATTRIBUTES, captions_for, render_frames, write_video
    from vcap.report import write_report

    work = Path(args.work or tempfile.mkdtemp(prefix="report_scale_"))
    rng = random.Random(0)
    videos, records = work / "videos", []
    videos.mkdir(parents=True, exist_ok=True)
    t = time.time()
    for i in range(args.videos):  # MSR-VTT's test size: 20 captions per video, 16 frames
        attr = rng.choice(ALL_ATTRIBUTES)
        write_video(videos / f"video{7010 + i}.mp4", render_frames(attr, 16, args.size, rng), 8)
        records.append({"video_id": f"video{7010 + i}", "video": f"video{7010 + i}.mp4",
                        "captions": captions_for(attr, rng, 20)})
    gen_s = time.time() - t
    (work / "test.json").write_text(json.dumps(records))
    out = work / "run"
    (out / "results").mkdir(parents=True, exist_ok=True)
    cfg = build_config(OmegaConf.create({
        "model": {"arch": "blip2_opt", "model_type": "tiny"},
        "datasets": {"custom_caption": {"build_info": {"annotations": {"train": None, "val": None,
                                                                       "test": str(work / "test.json")},
                                                       "videos": str(videos)},
                                        "vis_processor": {"eval": {"num_frames": 4, "image_size": args.size}}}},
        "run": {"task": "captioning", "output_dir": str(out)}}))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / "results" / "test.json").write_text(json.dumps(
        [{"video_id": r["video_id"], "prediction": rng.choice(r["captions"]), "references": r["captions"]}
         for r in records]))
    (out / "metrics.json").write_text(json.dumps({"test": {"CIDEr": 0.5, "num_videos": len(records)}}))
    (out / "log.jsonl").write_text("".join(json.dumps({"step": s, "train/loss": 3 / (1 + s / 100), "train/lr": 1e-4})
                                           + "\n" for s in range(1, 3001)))
    t = time.time()
    page = write_report(out, "test", workers=args.workers)
    report_s = time.time() - t
    files = [p for p in page.parent.rglob("*") if p.is_file()]
    result = {"videos": len(records), "frame_size": args.size, "generate_s": round(gen_s, 1),
              "report_s": round(report_s, 1), "report_mb": round(sum(p.stat().st_size for p in files) / 1e6, 1),
              "files": len(files), "page_mb": round(page.stat().st_size / 1e6, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
