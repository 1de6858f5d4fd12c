"""Dataset classes over vcap annotation records: ``{"video_id", "video", "captions": [...]}``.

Training sets yield one item per caption; evaluation sets one item per video, with the
references kept on the dataset (``references``) rather than collated into batches.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
from pathlib import Path
from typing import Literal

from torch.utils.data import Dataset, default_collate

from vcap.common.seed import item_seed
from vcap.processors.video_io import VideoDecodeError, decode_all

log = logging.getLogger(__name__)
MAX_SUBSTITUTIONS = 10


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON list, JSON Lines or CSV file (a header row names the columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist; `vcap prepare <dataset>` writes it")
    if path.suffix == ".csv":
        return read_csv_rows(path)
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = json.loads(text)
    if isinstance(rows, dict) and "annotations" in rows:  # COCO-style {"images", "annotations"}
        rows = rows["annotations"]
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")
    return rows


# WebVid's results_2M_train.csv / results_10M_train.csv: videoid, contentUrl, duration, page_dir, name; the
# video of a row is <page_dir>/<videoid>.mp4 (as WebVid's download script writes it), its caption ``name``
WEBVID_COLUMNS = {"videoid", "page_dir", "name"}


def webvid_rows(rows: list[dict]) -> list[dict]:
    return [{"video_id": str(r["videoid"]), "video": f"{r['page_dir']}/{r['videoid']}.mp4", "caption": r["name"]}
            for r in rows]


def read_csv_rows(path: Path) -> list[dict]:
    """A CSV with a header row, as the files in circulation are: comma-, semicolon- or tab-separated (Excel
    re-saves of MSRVTT_JSFUSION_test.csv use ';'), CRLF or LF line ends, a UTF-8 byte-order mark or none."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    header = text.splitlines()[0] if text else ""
    delimiter = max(",;\t", key=header.count) if header else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def require_columns(rows: list[dict], path: str | os.PathLike, *columns: str) -> list[dict]:
    """``rows`` if their header has ``columns``; else an error naming the file, what it has and what is needed."""
    found = list(rows[0]) if rows else []
    absent = [c for c in columns if c not in found]
    if absent or not rows:
        raise ValueError(f"{path}: expected the columns {list(columns)}, found {found or 'no rows'}"
                         + (f" (missing {absent})" if rows else ""))
    return rows


def records_from_rows(rows: list[dict], source: str) -> list[dict]:
    """Group rows ``{video, caption or captions, [video_id], [start, end]}`` into vcap records.

    Rows of the same video (and segment) are merged; the order of first appearance is kept.
    """
    records: dict[tuple, dict] = {}
    suffix = Path(source).suffix.lower()
    # where a row is, as an editor shows it: CSV rows start on line 2 (after the header), JSONL on line 1
    where = {".csv": lambda i: f"line {i + 2}", ".jsonl": lambda i: f"line {i + 1}"}.get(suffix, lambda i: f"record {i}")
    for i, row in enumerate(rows):
        video = row.get("video") or row.get("image")
        if not video:
            raise ValueError(f"{source}: {where(i)} has no 'video' (or 'image'); expected the columns video and "
                             f"caption (or captions), optionally video_id, start, end; found {sorted(row)}")
        if "captions" not in row and "caption" not in row:
            raise ValueError(f"{source}: no 'caption' or 'captions' column; found the columns {sorted(row)} "
                             f"(rename the caption column to 'caption')")
        caps = row.get("captions", row.get("caption"))
        caps = [caps] if isinstance(caps, str) else list(caps or [])
        if not caps or not all(isinstance(c, str) and c.strip() for c in caps):
            raise ValueError(f"{source}: {where(i)} ({video}): the caption is empty")
        span = []
        for key in ("start", "end"):
            value = row.get(key)
            if value not in (None, ""):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{source}: row {i} ({video}): {key!r} must be seconds, got {value!r}") from None
            span.append(value if value != "" else None)
        vid = str(row.get("video_id") or (Path(video).stem if span == [None, None] else
                                          f"{Path(video).stem}_{span[0]:g}_{span[1]:g}"))
        key = (vid, video, *span)
        if key not in records:
            records[key] = {"video_id": vid, "video": video, "captions": []}
            if span != [None, None]:
                records[key]["start"], records[key]["end"] = span
        records[key]["captions"].extend(caps)
    ids = [r["video_id"] for r in records.values()]
    if len(set(ids)) != len(ids):
        dup = next(v for v in ids if ids.count(v) > 1)
        raise ValueError(f"{source}: video_id {dup!r} names two different videos or segments")
    return list(records.values())


def load_annotations(path: str | os.PathLike) -> list[dict]:
    """vcap records ``{"video_id", "video", "captions": [...], ["start", "end"]}`` from ``path``.

    Also accepted: any JSON / JSONL / CSV of rows ``{video, caption or captions, [video_id],
    [start, end]}`` (LAVIS's annotation files among them), grouped by video; and WebVid's CSV.
    """
    rows = read_rows(path)
    if rows and isinstance(rows[0], dict) and WEBVID_COLUMNS <= set(rows[0]):
        rows = webvid_rows(rows)
    if rows and all(isinstance(r, dict) and {"video_id", "video", "captions"} <= set(r) for r in rows):
        records = rows
    else:
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise ValueError(f"{path}: row {i} is a {type(r).__name__}, expected a mapping")
        records = records_from_rows(rows, str(path))
    for i, r in enumerate(records):
        if not isinstance(r["captions"], list) or not r["captions"]:
            raise ValueError(f"{path}: record {i} ({r['video_id']}): 'captions' must be a non-empty list")
        for key in ("start", "end"):
            if r.get(key) is not None and not isinstance(r[key], (int, float)):
                raise ValueError(f"{path}: record {i} ({r['video_id']}): {key!r} must be seconds, got {r[key]!r}")
    if not records:
        raise ValueError(f"{path}: no records")
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
                 seed: int = 0, cache_decoded: bool = False, features=None):
        self.records = records
        self.features = features  # a FeatureStore: cached frozen-encoder features instead of video
        self.video_root = Path(video_root)
        self.vis_processor, self.text_processor = vis_processor, text_processor
        self.seed, self.epoch = seed, 0
        # decoded frames kept in memory (per process) for datasets small enough to hold; frame
        # sampling and augmentation still run on every access
        self.cache: dict[int, object] | None = {} if cache_decoded else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def item_seed(self, index: int) -> int:
        return item_seed(self.seed, self.epoch, index)

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
        if self.features is not None:
            rec_idx = self.video_index(index)
            emb, mask = self.features.get(self.records[rec_idx]["video_id"])
            return {"rec_idx": rec_idx, "clip_features": emb, "video_mask": mask.bool(), "valid": True,
                    "bad_samples": []}
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
            video, mask = self.vis_processor.blank()
            return {"rec_idx": rec_idx, "video": video, "video_mask": mask, "valid": False, "bad_samples": bad}
        raise RuntimeError(f"{MAX_SUBSTITUTIONS} videos in a row failed to decode near {self.video_root}: "
                           f"{bad[-1]['path']}: {bad[-1]['reason']}; check the video folder")


def _visual(out: dict) -> dict:
    """The visual part of an item: the processed clip, or cached features, and the frame mask."""
    return {k: out[k] for k in ("video", "clip_features", "video_mask") if k in out}


class CaptionTrainDataset(VideoDataset):
    """One item per (video, caption) pair, or with ``captions="one"`` one item per video whose
    caption is drawn anew each epoch (from the item seed)."""

    def __init__(self, *args, captions: Literal["all", "one"] = "all", **kwargs):
        super().__init__(*args, **kwargs)
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
        return {**_visual(out), "text_input": self.text_processor(captions[k]),
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
        return {**_visual(out), "valid": out["valid"],
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
