"""Retrieval metrics: text->video and video->text R@K, median and mean rank, from a similarity matrix; video->text
as CLIP4Clip ranks it when a video has several captions (MSVD, MSR-VTT's 20 per video).

Ties are counted against the model (a candidate scoring equal to the right one ranks above it), so a constant
similarity cannot look good; CLIP4Clip's ``compute_metrics`` counts them for it (and adds a row per tie), which only
differs where scores are exactly equal.
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


def _group_blocks(t2v: torch.Tensor, n_videos: int, chunk: int) -> list[torch.Tensor]:
    """Text indices in blocks of whole caption groups (all texts of a video in one block), about ``chunk`` texts
    each, in video order."""
    order = torch.argsort(t2v.cpu(), stable=True)
    ends = torch.cumsum(torch.bincount(t2v.cpu(), minlength=n_videos), 0).tolist()
    blocks, start = [], 0
    for end in ends:
        if end - start >= chunk or (end == ends[-1] and end > start):
            blocks.append(order[start:end].to(t2v.device))
            start = end
    return blocks


def retrieval_metrics_blocks(score_block, n_texts: int, n_videos: int, text_to_video, chunk: int | None = None,
                             dual_softmax: float | None = None, device: torch.device | str = "cpu",
                             details: dict | None = None) -> dict:
    """Retrieval metrics from ``score_block(rows) -> (len(rows), n_videos)`` similarity rows of the texts ``rows``
    (a LongTensor of text indices).

    text -> video ranks each text's video among all videos. video -> text is CLIP4Clip's multi-sentence protocol
    (main_task_retrieval.py, then metrics.py's ``tensor_video_to_text_sim`` and ``compute_metrics``): a video scores
    each video's group of captions by the group's best caption, and its own group is ranked among the groups (670
    for MSVD's test set), not its best caption among every caption. With one caption per video both are the usual
    square ranking.

    The full matrix is never held: passes over blocks of about ``chunk`` texts made of whole caption groups (two;
    three with ``dual_softmax``, the temperature of dual-softmax re-scoring: each score times the softmax over texts
    of that video's column) keep memory at one block. ``device`` is where the blocks live (a GPU too): the ranks are
    counted there. ``details`` (a dict) receives ``top5`` (each text's five best videos, best first) and ``rank``
    (its video's rank), in text order.
    """
    dev = torch.device(device)
    t2v = _check(text_to_video, n_texts, n_videos).to(dev)
    blocks = _group_blocks(t2v, n_videos, chunk or default_chunk(n_videos))
    lse = None
    if dual_softmax is not None:  # column log-sum-exp over all texts, streamed
        lse = torch.full((n_videos,), -float("inf"), dtype=torch.float64, device=dev)
        for rows in blocks:
            lse = torch.logaddexp(lse, torch.logsumexp(score_block(rows).double() * dual_softmax, dim=0))

    def block(rows):
        b = score_block(rows).float()
        if lse is not None:
            b = b * torch.exp(b.double() * dual_softmax - lse[None]).float()
        return b

    t_ranks = torch.empty(n_texts, dtype=torch.long, device=dev)
    best = torch.full((n_videos,), -float("inf"), device=dev)  # each video's best own caption
    top5 = torch.empty(n_texts, min(5, n_videos), dtype=torch.long, device=dev) if details is not None else None
    for rows in blocks:
        b = block(rows)
        right = b.gather(1, t2v[rows, None])
        t_ranks[rows] = (b >= right).sum(1)  # includes itself: rank 1 when nothing ties or beats it
        best = best.scatter_reduce(0, t2v[rows], right.squeeze(1), reduce="amax")
        if top5 is not None:
            top5[rows] = b.topk(top5.shape[1], dim=1).indices
    # video -> text: every group's best caption for each video, against the video's own group's
    v_ranks = torch.zeros(n_videos, dtype=torch.long, device=dev)
    for rows in blocks:
        b = block(rows)
        groups, local = torch.unique_consecutive(t2v[rows], return_inverse=True)  # rows come sorted by video
        group_best = b
        if len(groups) < len(rows):  # some video has several captions here
            group_best = torch.full((len(groups), n_videos), -float("inf"), device=dev)
            group_best.scatter_reduce_(0, local[:, None].expand_as(b), b, reduce="amax")
        v_ranks += (group_best >= best[None]).sum(0)  # the own group ties itself: rank 1 when nothing beats it
    if details is not None:
        details["rank"], details["top5"] = t_ranks.tolist(), top5.tolist()
    return {**_summary(t_ranks.cpu().numpy(), "t2v"), **_summary(v_ranks.cpu().numpy(), "v2t")}


def retrieval_metrics(sim, text_to_video, chunk: int | None = None, dual_softmax: float | None = None) -> dict:
    """``sim`` is (num_texts x num_videos); ``text_to_video[i]`` is the video index of text i (see
    ``retrieval_metrics_blocks`` for the two directions)."""
    sim = torch.as_tensor(sim, dtype=torch.float32)
    return retrieval_metrics_blocks(lambda rows: sim[rows], sim.shape[0], sim.shape[1], text_to_video, chunk,
                                    dual_softmax)
