"""Dataset classes over vcap annotation records: ``{"video_id", "video", "captions": [...]}``.

Training sets yield one item per caption; evaluation sets one item per video, with the
references kept on the dataset (``references``) rather than collated into batches.
"""
from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vcap.datasets.video import VideoDecodeError, decode_all

log = logging.getLogger(__name__)
MAX_SUBSTITUTIONS = 10


def load_annotations(path: str | os.PathLike) -> list[dict]:
    """vcap annotation records: ``{"video_id", "video", "captions": [...], ["start", "end"]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist; vcap prepare <dataset> writes it")
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for i, r in enumerate(records):
        missing = [k for k in ("video_id", "video", "captions") if k not in r]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}; expected keys video_id, video, captions")
        if not isinstance(r["captions"], list) or not r["captions"]:
            raise ValueError(f"{path}: record {i} ({r['video_id']}): 'captions' must be a non-empty list")
        for key in ("start", "end"):
            if r.get(key) is not None and not isinstance(r[key], (int, float)):
                raise ValueError(f"{path}: record {i} ({r['video_id']}): {key!r} must be seconds, got {r[key]!r}")
    return records


def collate(items: list[dict]) -> dict:
    """default_collate, with the decode failures met while loading the items kept as a plain list."""
    bad = [b for item in items for b in item.pop("bad_samples", [])]
    batch = default_collate(items)
    batch["bad_samples"] = bad
    return batch


class VideoDataset(Dataset):
    """Shared decoding with deterministic per-item seeds and bad-video handling.

    A file that fails to decode is logged and reported in the item's ``bad_samples`` (the runner
    collects them into ``bad_samples.jsonl``). Training items substitute the next video;
    evaluation items keep their id with ``valid`` False and are left out of the metrics.
    """

    substitute = True

    def __init__(self, records: list[dict], video_root: str | os.PathLike, vis_processor, text_processor,
                 seed: int = 0, cache_decoded: bool = False):
        self.records = records
        self.video_root = Path(video_root)
        self.vis_processor, self.text_processor = vis_processor, text_processor
        self.seed, self.epoch = seed, 0
        # decoded frames kept in memory (per process) for datasets small enough to hold; frame
        # sampling and augmentation still run on every access
        self.cache: dict[int, object] | None = {} if cache_decoded else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def item_seed(self, index: int) -> int:
        """A seed for (run seed, epoch, index): frame sampling and augmentation are reproducible."""
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]) % (2**31)

    def video_index(self, index: int) -> int:
        raise NotImplementedError

    def _clip(self, rec_idx: int, seed: int):
        record = self.records[rec_idx]
        path = self.video_root / record["video"]
        span = {"start": record.get("start"), "end": record.get("end")}
        if self.cache is None:
            return self.vis_processor.load(path, seed=seed, **span)
        if rec_idx not in self.cache:
            self.cache[rec_idx] = decode_all(path)
        return self.vis_processor.load(path, seed=seed, decoded=self.cache[rec_idx], **span)

    def load_video(self, index: int) -> dict:
        """``{"rec_idx", "video", "video_mask", "valid", "bad_samples"}`` for item ``index``."""
        bad = []
        seed = self.item_seed(index)
        for k in range(MAX_SUBSTITUTIONS if self.substitute else 1):
            rec_idx = (self.video_index(index) + k) % len(self.records)
            try:
                frames, mask = self._clip(rec_idx, seed)
            except VideoDecodeError as e:
                log.warning("bad sample: %s", e)
                bad.append({"path": e.path, "reason": e.reason, "video_id": self.records[rec_idx]["video_id"]})
                continue
            video, mask = self.vis_processor(frames, seed=seed, mask=mask)
            return {"rec_idx": rec_idx, "video": video, "video_mask": mask, "valid": True, "bad_samples": bad}
        if not self.substitute:
            p = self.vis_processor
            return {"rec_idx": rec_idx, "video": torch.zeros(p.num_frames, 3, p.image_size, p.image_size),
                    "video_mask": torch.zeros(p.num_frames, dtype=torch.bool), "valid": False, "bad_samples": bad}
        raise RuntimeError(f"{MAX_SUBSTITUTIONS} videos in a row failed to decode near {self.video_root}: "
                           f"{bad[-1]['path']}: {bad[-1]['reason']}; check the video folder")


class CaptionTrainDataset(VideoDataset):
    """One item per (video, caption) pair, or with ``captions="one"`` one item per video whose
    caption is drawn anew each epoch (from the item seed)."""

    def __init__(self, *args, captions: Literal["all", "one"] = "all", **kwargs):
        super().__init__(*args, **kwargs)
        if captions not in ("all", "one"):
            raise ValueError(f"captions must be 'all' or 'one', got {captions!r}")
        self.mode = captions
        self.pairs = [(i, k) for i, r in enumerate(self.records)
                      for k in (range(len(r["captions"])) if captions == "all" else [None])]

    def __len__(self) -> int:
        return len(self.pairs)

    def video_index(self, index: int) -> int:
        return self.pairs[index][0]

    def captions(self) -> list[str]:
        return [self.text_processor(c) for r in self.records for c in r["captions"]]

    def __getitem__(self, index: int) -> dict:
        out = self.load_video(index)
        rec_idx, k = out["rec_idx"], self.pairs[index][1]
        captions = self.records[rec_idx]["captions"]
        if k is None or rec_idx != self.pairs[index][0]:  # one caption per video, or a substituted video
            k = random.Random(self.item_seed(index)).randrange(len(captions))
        video_id = self.records[rec_idx]["video_id"]
        return {"video": out["video"], "video_mask": out["video_mask"], "text_input": self.text_processor(captions[k]),
                "video_id": video_id, "key": f"{video_id}#{k}", "index": index, "bad_samples": out["bad_samples"]}


class CaptionEvalDataset(VideoDataset):
    """One item per video (never substituted: a bad video is marked ``valid`` False); all its
    reference captions are in ``references``."""

    substitute = False

    def __len__(self) -> int:
        return len(self.records)

    def video_index(self, index: int) -> int:
        return index

    @property
    def references(self) -> dict[str, list[str]]:
        return {r["video_id"]: list(r["captions"]) for r in self.records}

    def __getitem__(self, index: int) -> dict:
        out = self.load_video(index)
        return {"video": out["video"], "video_mask": out["video_mask"], "valid": out["valid"],
                "video_id": self.records[index]["video_id"], "index": index, "bad_samples": out["bad_samples"]}


class RetrievalEvalDataset(CaptionEvalDataset):
    """Videos as items; the text side (every caption, cleaned) is ``texts`` with ``text_to_video``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.texts, self.text_to_video = [], []
        for i, r in enumerate(self.records):
            for c in r["captions"]:
                self.texts.append(self.text_processor(c))
                self.text_to_video.append(i)
