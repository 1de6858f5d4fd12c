"""Retrieval metrics: text->video and video->text R@K, median and mean rank, from a similarity matrix.

Ties are counted against the model (a candidate scoring equal to the right one ranks above it), so
a constant similarity cannot look good.
"""
from __future__ import annotations

import numpy as np
import torch


def _summary(ranks: np.ndarray, prefix: str) -> dict:
    return {
        f"{prefix}_R1": float(100.0 * np.mean(ranks <= 1)),
        f"{prefix}_R5": float(100.0 * np.mean(ranks <= 5)),
        f"{prefix}_R10": float(100.0 * np.mean(ranks <= 10)),
        f"{prefix}_MdR": float(np.median(ranks)),
        f"{prefix}_MnR": float(np.mean(ranks)),
    }


def retrieval_metrics(sim, text_to_video, chunk: int = 4096) -> dict:
    """``sim`` is (num_texts x num_videos); ``text_to_video[i]`` is the video index of text i.

    text->video ranks every text; video->text ranks, for each video, its best-ranked caption
    (CLIP4Clip's multi-sentence protocol; the square one-caption case is the usual one).
    """
    sim = torch.as_tensor(sim, dtype=torch.float32)
    t2v = torch.as_tensor(np.asarray(text_to_video), dtype=torch.long)
    n_texts, n_videos = sim.shape
    if t2v.shape != (n_texts,):
        raise ValueError(f"text_to_video has shape {tuple(t2v.shape)}, expected ({n_texts},)")
    if n_texts and (t2v.min() < 0 or t2v.max() >= n_videos):
        raise ValueError(f"text_to_video values must lie in [0, {n_videos}); got {int(t2v.min())}..{int(t2v.max())}")
    missing = sorted(set(range(n_videos)) - set(t2v.tolist()))
    if missing:
        raise ValueError(f"{len(missing)} videos have no text, e.g. {missing[:5]}")

    t_ranks = torch.empty(n_texts, dtype=torch.long)
    for s in range(0, n_texts, chunk):
        block = sim[s: s + chunk]
        right = block.gather(1, t2v[s: s + chunk, None])
        t_ranks[s: s + chunk] = (block >= right).sum(1)  # includes itself: rank 1 when nothing ties or beats it

    # video -> text: best own caption of each video, ranked against every other text
    best = torch.full((n_videos,), -float("inf"))
    best = best.scatter_reduce(0, t2v, sim[torch.arange(n_texts), t2v], reduce="amax")
    v_ranks = torch.zeros(n_videos, dtype=torch.long)
    for s in range(0, n_texts, chunk):
        block = sim[s: s + chunk]  # (c, V)
        own = t2v[s: s + chunk, None] == torch.arange(n_videos)[None]
        v_ranks += ((block >= best[None]) & ~own).sum(0)
    v_ranks += 1
    return {**_summary(t_ranks.numpy(), "t2v"), **_summary(v_ranks.numpy(), "v2t")}
