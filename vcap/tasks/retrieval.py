"""Video-text retrieval: contrastive training; evaluation ranks every text against every video."""
from __future__ import annotations

from pathlib import Path

import torch

from vcap.common import dist
from vcap.common.checkpoint import write_json
from vcap.common.registry import registry
from vcap.evaluation.retrieval import retrieval_metrics_blocks
from vcap.processors.video_io import MEDIA_EXTENSIONS, VideoDecodeError
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
    # what evaluation reports, so run.monitor is checked before any work
    METRICS = tuple(f"{d}_{m}" for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MdR", "MnR")) + (
        "num_videos", "num_bad_videos")

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

            def block(rows):  # similarity rows of some texts: the full matrix is never held
                return model.similarity(texts_kept[rows].to(model.device), videos_kept).float().cpu()

            details = {}
            metrics = retrieval_metrics_blocks(block, len(keep_t), len(keep_v),
                                               [new_v[dataset.text_to_video[t]] for t in keep_t],
                                               dual_softmax=self.run.dual_softmax, details=details)
            metrics["num_videos"], metrics["num_bad_videos"] = len(keep_v), len(bad)
            if self.run.dual_softmax is not None:  # flagged wherever the numbers go
                metrics["dual_softmax"] = self.run.dual_softmax
                metrics["notes"] = {"dual_softmax": (
                    f"re-scored by dual softmax (temperature {self.run.dual_softmax}): each score is weighted by a "
                    f"softmax over all of this split's texts, so the numbers use the test set's text statistics, "
                    f"which a search over new queries does not have; not comparable with plain-similarity numbers")}
            ids = [dataset.records[v]["video_id"] for v in keep_v]
            top5 = [[ids[v] for v in row] for row in details["top5"]]
            write_json(Path(output_dir) / "results" / f"{split}.json",
                       [{"text": dataset.texts[t], "video_id": dataset.records[dataset.text_to_video[t]]["video_id"],
                         "top1": top5[n][0], "rank": details["rank"][n], "top5": top5[n]}
                        for n, t in enumerate(keep_t)], indent=1)
        return dist.broadcast_object(metrics)


# ------------------------------------------------------------------------------------------------
# Search over a folder of videos (`vcap retrieve`): embeddings cached per model and file
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def embed_folder(model, processor, root: Path, cache_dir: Path, signature: str,
                 batch_size: int = 16) -> tuple[list[str], torch.Tensor, list[str], int]:
    """Every video (or image) under ``root`` embedded once: ``cache_dir/<signature>.pt`` keeps each file's
    embedding by relative path with its size and mtime, so a changed file is embedded again. Returns
    (relative names, (N, D) embeddings, files that could not be decoded with why, how many were embedded now)."""
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS
                   and cache_dir not in f.parents)
    if not files:
        raise FileNotFoundError(f"no videos under {root}")
    cache = cache_dir / f"{signature}.pt"
    known = torch.load(cache, weights_only=True) if cache.is_file() else {}
    rows, todo, skipped = {}, [], []
    for f in files:
        rel, st = str(f.relative_to(root)), f.stat()
        sig = f"{st.st_size}:{st.st_mtime_ns}"
        if rel in known and known[rel]["sig"] == sig:
            rows[rel] = known[rel]
        else:
            todo.append((rel, f, sig))
    for s in range(0, len(todo), batch_size):
        clips, masks, names = [], [], []
        for rel, f, sig in todo[s: s + batch_size]:
            try:
                frames, mask = processor.load(f)
            except VideoDecodeError as e:
                skipped.append(f"{rel}: {e.reason}")
                continue
            video, mask = processor(frames, mask=mask)
            clips.append(video), masks.append(mask), names.append((rel, sig))
        if clips:
            emb = model.encode_video({"video": torch.stack(clips), "video_mask": torch.stack(masks)}).float().cpu()
            for (rel, sig), e in zip(names, emb):
                rows[rel] = {"sig": sig, "emb": e}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rows, cache)
    names = sorted(rows)
    return names, torch.stack([rows[n]["emb"] for n in names]), skipped, len(todo) - len(skipped)


@torch.no_grad()
def rank_videos(model, queries: list[str], names: list[str], videos: torch.Tensor, k: int) -> list[dict]:
    """``[{"query", "results": [{"video", "score"}, ...]}]``: the top ``k`` videos per text query."""
    text = model.encode_text({"text_input": list(queries)}).float()
    sim = model.similarity(text.to(model.device), videos.to(model.device)).float().cpu()
    out = []
    for q, row in zip(queries, sim):
        top = row.topk(min(k, len(names)))
        out.append({"query": q, "results": [{"video": names[i], "score": float(v)}
                                            for v, i in zip(top.values.tolist(), top.indices.tolist())]})
    return out
