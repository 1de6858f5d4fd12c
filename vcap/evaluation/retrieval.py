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


def _check(text_to_video, n_texts: int, n_videos: int) -> torch.Tensor:
    t2v = torch.as_tensor(np.asarray(text_to_video), dtype=torch.long)
    if t2v.shape != (n_texts,):
        raise ValueError(f"text_to_video has shape {tuple(t2v.shape)}, expected ({n_texts},)")
    if n_texts and (t2v.min() < 0 or t2v.max() >= n_videos):
        raise ValueError(f"text_to_video values must lie in [0, {n_videos}); got {int(t2v.min())}..{int(t2v.max())}")
    missing = sorted(set(range(n_videos)) - set(t2v.tolist()))
    if missing:
        raise ValueError(f"{len(missing)} videos have no text, e.g. {missing[:5]}")
    return t2v


def default_chunk(n_videos: int, max_elements: int = 2**26) -> int:
    """Texts per block so that a block of scores stays under ``max_elements`` (256 MB of float32)."""
    return max(1, max_elements // max(1, n_videos))


def retrieval_metrics_blocks(score_block, n_texts: int, n_videos: int, text_to_video, chunk: int | None = None,
                             dual_softmax: float | None = None, device: torch.device | str = "cpu",
                             details: dict | None = None) -> dict:
    """Retrieval metrics from ``score_block(start, end) -> (end - start, n_videos)`` similarity rows.

    The full matrix is never held: passes over blocks of texts (two; three with
    ``dual_softmax``, the temperature of dual-softmax re-scoring: each score times the softmax
    over texts of that video's column) keep memory at one block. ``device`` is where the blocks live (a GPU
    too): the ranks are counted there. ``details`` (a dict) receives ``top5`` (each text's five best videos,
    best first) and ``rank`` (its video's rank).
    """
    dev = torch.device(device)
    t2v = _check(text_to_video, n_texts, n_videos).to(dev)
    chunk = chunk or default_chunk(n_videos)
    blocks = [(s, min(s + chunk, n_texts)) for s in range(0, n_texts, chunk)]
    lse = None
    if dual_softmax is not None:  # column log-sum-exp over all texts, streamed
        lse = torch.full((n_videos,), -float("inf"), dtype=torch.float64, device=dev)
        for s, e in blocks:
            lse = torch.logaddexp(lse, torch.logsumexp(score_block(s, e).double() * dual_softmax, dim=0))

    def block(s, e):
        b = score_block(s, e).float()
        if lse is not None:
            b = b * torch.exp(b.double() * dual_softmax - lse[None]).float()
        return b

    t_ranks = torch.empty(n_texts, dtype=torch.long, device=dev)
    best = torch.full((n_videos,), -float("inf"), device=dev)
    for s, e in blocks:
        b = block(s, e)
        right = b.gather(1, t2v[s:e, None])
        t_ranks[s:e] = (b >= right).sum(1)  # includes itself: rank 1 when nothing ties or beats it
        best = best.scatter_reduce(0, t2v[s:e], right.squeeze(1), reduce="amax")
        if details is not None:
            details.setdefault("top5", []).extend(b.topk(min(5, n_videos), dim=1).indices.tolist())
    # video -> text: each video's best own caption, ranked against every other text
    v_ranks = torch.ones(n_videos, dtype=torch.long, device=dev)
    for s, e in blocks:
        b = block(s, e)
        v_ranks += (b >= best[None]).sum(0)
        own = b.gather(1, t2v[s:e, None]).squeeze(1) >= best[t2v[s:e]]
        v_ranks -= torch.zeros(n_videos, dtype=torch.long, device=dev).scatter_add_(0, t2v[s:e], own.long())
    if details is not None:
        details["rank"] = t_ranks.tolist()
    return {**_summary(t_ranks.cpu().numpy(), "t2v"), **_summary(v_ranks.cpu().numpy(), "v2t")}


def retrieval_metrics(sim, text_to_video, chunk: int | None = None, dual_softmax: float | None = None) -> dict:
    """``sim`` is (num_texts x num_videos); ``text_to_video[i]`` is the video index of text i.

    text->video ranks every text; video->text ranks, for each video, its best-ranked caption
    (CLIP4Clip's multi-sentence protocol; the square one-caption case is the usual one).
    """
    sim = torch.as_tensor(sim, dtype=torch.float32)
    return retrieval_metrics_blocks(lambda s, e: sim[s:e], sim.shape[0], sim.shape[1], text_to_video, chunk,
                                    dual_softmax)
