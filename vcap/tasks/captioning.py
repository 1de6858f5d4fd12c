"""Captioning: cross-entropy training; evaluation generates captions and scores them with pycocoevalcap."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vcap.common import dist
from vcap.common.registry import registry
from vcap.evaluation.caption import caption_scores
from vcap.tasks.base_task import BaseTask


@registry.register_task("captioning")
class CaptioningTask(BaseTask):
    def gen_cfg(self) -> dict:
        r = self.run
        return {"num_beams": r.num_beams, "max_new_tokens": r.max_new_tokens, "min_new_tokens": r.min_new_tokens}

    @torch.no_grad()
    def evaluate(self, model, loader, dataset, split: str, output_dir: Path) -> dict:
        local = []
        for batch in loader:
            captions = model.generate(batch, **self.gen_cfg())
            local.extend({"video_id": v, "caption": c} for v, c in zip(batch["video_id"], captions))
        # one gather; de-duplicate by id in linear time
        preds = {}
        for part in dist.all_gather_object(local):
            for r in part:
                preds.setdefault(r["video_id"], r["caption"])
        metrics = None
        if dist.is_main_process():
            refs = dataset.references
            metrics = caption_scores(refs, preds)
            if hasattr(dataset, "extra_metrics"):  # dataset-specific diagnostics, e.g. attribute accuracy
                metrics.update(dataset.extra_metrics(preds))
            out = Path(output_dir) / "results" / f"{split}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"video_id": k, "prediction": preds[k], "references": refs[k]} for k in refs]
            out.write_text(json.dumps(rows, indent=1))
        return dist.broadcast_object(metrics)
