"""Captioning: cross-entropy training; evaluation generates captions and scores them with pycocoevalcap."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vcap.common import dist
from vcap.common.checkpoint import write_json
from vcap.common.registry import registry
from vcap.evaluation.caption import METRIC_KEYS, caption_scores
from vcap.tasks.base_task import BaseTask


def write_coco_gt(refs: dict[str, list[str]], path: Path) -> None:
    """The references in COCO caption format, in the run's own directory (never a global cache)."""
    images = [{"id": vid} for vid in refs]
    annotations = [{"image_id": vid, "id": n, "caption": c}
                   for n, (vid, c) in enumerate((v, c) for v, caps in refs.items() for c in caps)]
    write_json(path, {"images": images, "annotations": annotations, "type": "captions"})


@registry.register_task("captioning")
class CaptioningTask(BaseTask):
    DEFAULT_MONITOR = "CIDEr"  # run.monitor when the project does not set it (null: keep the last epoch)
    # what evaluation reports, so run.monitor is checked before any work (a dataset may add its own)
    METRICS = METRIC_KEYS + ("SPICE", "num_videos", "num_bad_videos")

    def gen_cfg(self) -> dict:
        """``run.generate`` as keyword settings of ``generate``."""
        return dataclasses.asdict(self.run.generate)

    @torch.no_grad()
    def evaluate(self, model, loader, dataset, split: str, output_dir: Path) -> dict:
        local = []
        settings = {**self.gen_cfg(), "num_captions": 1}  # the metrics score one caption per video
        for batch in loader:
            captions = model.generate(batch, **settings)
            local.extend({"video_id": v, "caption": c}
                         for v, c, ok in zip(batch["video_id"], captions, batch["valid"].tolist()) if ok)
        # one gather; de-duplicate by id in linear time
        preds = {}
        for part in dist.all_gather_object(local):
            for r in part:
                preds.setdefault(r["video_id"], r["caption"])
        metrics = None
        if dist.is_main_process():
            # videos that failed to decode are left out (bad_samples.jsonl names them) and counted
            all_refs = dataset.references
            refs = {k: v for k, v in all_refs.items() if k in preds}
            metrics = caption_scores(refs, preds)
            metrics["num_videos"] = len(refs)
            metrics["num_bad_videos"] = len(all_refs) - len(refs)
            write_coco_gt(all_refs, Path(output_dir) / "gt" / f"{split}.json")
            if hasattr(dataset, "extra_metrics"):  # dataset-specific diagnostics, e.g. attribute accuracy
                metrics.update(dataset.extra_metrics(preds))
            write_json(Path(output_dir) / "results" / f"{split}.json",
                       [{"video_id": k, "prediction": preds[k], "references": refs[k]} for k in refs], indent=1)
        return dist.broadcast_object(metrics)
