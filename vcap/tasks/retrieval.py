"""Video-text retrieval: contrastive training; evaluation ranks every text against every video."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vcap.common import dist
from vcap.common.registry import registry
from vcap.evaluation.retrieval import retrieval_metrics_blocks
from vcap.tasks.base_task import BaseTask


def _gather_rows(local: list[tuple[int, torch.Tensor]], n: int) -> torch.Tensor:
    rows = [None] * n
    for part in dist.all_gather_object(local):
        for i, emb in part:
            rows[i] = emb
    return torch.stack(rows)


@registry.register_task("retrieval")
class RetrievalTask(BaseTask):
    DEFAULT_MONITOR = "t2v_R1"  # run.monitor when the project does not set it (null: keep the last epoch)

    @torch.no_grad()
    def evaluate(self, model, loader, dataset, split: str, output_dir: Path) -> dict:
        videos, bad = [], []
        for batch in loader:
            emb = model.encode_video(batch).float().cpu()
            videos.extend(zip(batch["index"].tolist(), emb))
            bad.extend(i for i, ok in zip(batch["index"].tolist(), batch["valid"].tolist()) if not ok)
        # texts are split across ranks the same way the videos are
        rank, world, bs = dist.get_rank(), dist.get_world_size(), self.run.batch_size_eval
        mine = list(range(rank, len(dataset.texts), world))
        texts = []
        for s in range(0, len(mine), bs):
            idx = mine[s: s + bs]
            emb = model.encode_text({"text_input": [dataset.texts[i] for i in idx]}).float().cpu()
            texts.extend(zip(idx, emb))
        video_emb = _gather_rows(videos, len(dataset))
        text_emb = _gather_rows(texts, len(dataset.texts))
        bad = {i for part in dist.all_gather_object(bad) for i in part}
        metrics = None
        if dist.is_main_process():
            # videos that failed to decode (bad_samples.jsonl names them) leave with their texts
            keep_v = [i for i in range(len(dataset)) if i not in bad]
            keep_t = [t for t, v in enumerate(dataset.text_to_video) if v not in bad]
            new_v = {v: n for n, v in enumerate(keep_v)}
            texts_kept, videos_kept = text_emb[keep_t], video_emb[keep_v].to(model.device)

            def block(s, e):  # similarity rows for texts s..e: the full matrix is never held
                return model.similarity(texts_kept[s:e].to(model.device), videos_kept).float().cpu()

            top1, details = [], {}
            metrics = retrieval_metrics_blocks(block, len(keep_t), len(keep_v),
                                               [new_v[dataset.text_to_video[t]] for t in keep_t],
                                               dual_softmax=self.run.dual_softmax, top1=top1, details=details)
            metrics["num_videos"], metrics["num_bad_videos"] = len(keep_v), len(bad)
            out = Path(output_dir) / "results" / f"{split}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            ids = [dataset.records[v]["video_id"] for v in keep_v]
            out.write_text(json.dumps([{"text": dataset.texts[t], "video_id": dataset.records[dataset.text_to_video[t]]["video_id"],
                                        "top1": ids[top1[n]], "rank": details["rank"][n],
                                        "top5": [ids[v] for v in details["top5"][n]]} for n, t in enumerate(keep_t)],
                                      indent=1))
        return dist.broadcast_object(metrics)
