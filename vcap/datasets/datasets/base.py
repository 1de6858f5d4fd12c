"""Dataset classes over vcap annotation records: ``{"video_id", "video", "captions": [...]}``.

Training sets yield one item per caption; evaluation sets one item per video, with the
references kept on the dataset (``references``) rather than collated into batches.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from vcap.datasets.video import VideoDecodeError, decode_all

log = logging.getLogger(__name__)
MAX_SUBSTITUTIONS = 10


def load_annotations(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for i, r in enumerate(records):
        missing = [k for k in ("video_id", "video", "captions") if k not in r]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}; expected keys video_id, video, captions")
        if not isinstance(r["captions"], list) or not r["captions"]:
            raise ValueError(f"{path}: record {i} ({r['video_id']}): 'captions' must be a non-empty list")
    return records


class VideoDataset(Dataset):
    """Shared decoding with deterministic per-item seeds and bad-video substitution."""

    def __init__(self, records: list[dict], video_root: str | os.PathLike, vis_processor, text_processor,
                 seed: int = 0, cache_decoded: bool = False):
        self.records = records
        self.video_root = Path(video_root)
        self.vis_processor, self.text_processor = vis_processor, text_processor
        self.seed, self.epoch = seed, 0
        self.bad_samples: list[dict] = []
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

    def load_video(self, index: int):
        """(record index used, processed clip). A broken file is reported and replaced by the next item."""
        for k in range(MAX_SUBSTITUTIONS):
            rec_idx = (self.video_index(index) + k) % len(self.records)
            path = self.video_root / self.records[rec_idx]["video"]
            seed = self.item_seed(index)
            try:
                if self.cache is None:
                    frames = self.vis_processor.load(path, seed=seed)
                else:
                    if rec_idx not in self.cache:
                        self.cache[rec_idx] = decode_all(path)
                    frames = self.vis_processor.load(path, seed=seed, decoded=self.cache[rec_idx])
            except VideoDecodeError as e:
                log.warning("skipping %s", e)
                self.bad_samples.append({"path": e.path, "reason": e.reason})
                continue
            return rec_idx, self.vis_processor(frames, seed=seed)
        raise RuntimeError(f"{MAX_SUBSTITUTIONS} videos in a row failed to decode near {self.video_root}; "
                           "check the video folder")


class CaptionTrainDataset(VideoDataset):
    """One item per (video, caption) pair."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pairs = [(i, c) for i, r in enumerate(self.records) for c in r["captions"]]

    def __len__(self) -> int:
        return len(self.pairs)

    def video_index(self, index: int) -> int:
        return self.pairs[index][0]

    def captions(self) -> list[str]:
        return [self.text_processor(c) for _, c in self.pairs]

    def __getitem__(self, index: int) -> dict:
        rec_idx, video = self.load_video(index)
        caption = self.pairs[index][1] if rec_idx == self.pairs[index][0] else self.records[rec_idx]["captions"][0]
        return {"video": video, "text_input": self.text_processor(caption),
                "video_id": self.records[rec_idx]["video_id"], "index": index}


class CaptionEvalDataset(VideoDataset):
    """One item per video; all its reference captions are in ``references``."""

    def __len__(self) -> int:
        return len(self.records)

    def video_index(self, index: int) -> int:
        return index

    @property
    def references(self) -> dict[str, list[str]]:
        return {r["video_id"]: list(r["captions"]) for r in self.records}

    def __getitem__(self, index: int) -> dict:
        rec_idx, video = self.load_video(index)
        return {"video": video, "video_id": self.records[rec_idx]["video_id"], "index": index}


class RetrievalEvalDataset(CaptionEvalDataset):
    """Videos as items; the text side (every caption, cleaned) is ``texts`` with ``text_to_video``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.texts, self.text_to_video = [], []
        for i, r in enumerate(self.records):
            for c in r["captions"]:
                self.texts.append(self.text_processor(c))
                self.text_to_video.append(i)
