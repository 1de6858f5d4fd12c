"""WebDataset shards: write any builder's split as tar shards, and stream training data from them.

A shard sample is one video: ``<key>.<ext>`` (the file's bytes as they are) and ``<key>.json``
(``video_id``, ``captions``, ``start``, ``end``). ``index.json`` beside the shards lists them with
the number of videos and captions each holds; ``captions.json`` holds every training caption (for
tokenizers), so nothing needs a pass over the shards before training.

video2dataset's WebDataset output (how WebVid and other web video sets are downloaded) is read as it is:
a folder of ``NNNNN.tar`` shards whose samples hold ``<key>.mp4``, ``<key>.txt`` (the caption) and
``<key>.json`` (the CSV's columns: ``videoid``, ``url``, ``duration``, ...), and ``NNNNN_stats.json`` beside
each with its count of ``successes`` (the samples the tar holds), which stands in for index.json.

Streaming (``ShardTrainDataset``): each epoch the shard order is shuffled from (seed, epoch); the
epoch's items (one per caption, or one per video) in that order are cut into equal contiguous
ranges, one per rank, and each rank's range into whole batches per DataLoader worker. So every
rank runs the same number of batches (DDP never waits on a missing one), every item is seen once
per epoch across ranks (up to the remainder of fewer than ranks x batch size items), each worker
reads only the shards its range covers, and videos are decoded after a seeded shuffle buffer. A
video that fails to decode is logged, reported in the batch's ``bad_samples`` and replaced by an
earlier good item of the same worker.
"""
from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Literal

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vcap.common.checkpoint import write_json
from vcap.common.seed import derive_seed, item_seed
from vcap.datasets.datasets.base import collate
from vcap.processors.video_io import VIDEO_EXTENSIONS, VideoBytes, VideoDecodeError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def write_shards(records: list[dict], video_root: str | os.PathLike, out: str | os.PathLike, shard_size: int,
                 split: str = "train", seed: int = 0) -> Path:
    """Write ``records`` (vcap annotation records) as tar shards of ``shard_size`` videos; returns index.json.

    Records are shuffled once (``seed``) so that each shard mixes the dataset; a missing video
    file stops the writing with its name (run ``vcap prepare`` first, which drops them).
    """
    import webdataset as wds

    if shard_size <= 0:
        raise ValueError(f"--shard-size must be positive, got {shard_size}")
    out, video_root = Path(out), Path(video_root)
    out.mkdir(parents=True, exist_ok=True)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shards = []
    for s in range(0, len(order), shard_size):
        name = f"{split}-{s // shard_size:06d}.tar"
        counts = []
        tmp = out / (name + ".tmp")
        with open(tmp, "wb") as f, wds.TarWriter(f, mtime=0) as sink:
            for n in order[s: s + shard_size]:
                r = records[n]
                path = video_root / r["video"]
                if not path.is_file():
                    raise FileNotFoundError(f"record {r['video_id']!r}: video {str(path)!r} does not exist")
                meta = {"video_id": r["video_id"], "captions": list(r["captions"]),
                        "start": r.get("start"), "end": r.get("end")}
                ext = path.suffix.lstrip(".").lower() or "mp4"
                sink.write({"__key__": f"{n:09d}", ext: path.read_bytes(), "json": json.dumps(meta).encode()})
                counts.append(len(r["captions"]))
        os.replace(tmp, out / name)
        shards.append({"url": name, "captions_per_video": counts})
    (out / "captions.json").write_text(json.dumps([c for r in records for c in r["captions"]]))
    index = {"split": split, "videos": len(records), "captions": sum(len(r["captions"]) for r in records),
             "shards": shards}
    write_json(out / "index.json", index)  # last, and whole: an index means every shard it names is written
    return out / "index.json"


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def iter_shard(url: str):
    """``(key, {ext: bytes})`` per sample of one tar shard, in order: webdataset's own tar reading, from a local
    path or anything its gopen opens (pipe:, http...)."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with gopen(url, "rb") as stream:
        for sample in group_by_keys(tar_file_expander([{"stream": stream, "url": url}])):
            yield os.path.basename(sample["__key__"]), {k: v for k, v in sample.items() if not k.startswith("__")}


def video2dataset_index(folder: Path) -> dict:
    """index.json's content for a video2dataset output folder: its tars with the ``successes`` of each
    ``<shard>_stats.json`` (one caption per video)."""
    shards = []
    for tar in sorted(folder.glob("*.tar")):
        stats = tar.with_name(f"{tar.stem}_stats.json")
        if not stats.is_file():
            raise FileNotFoundError(f"{tar}: no {stats.name} beside it; video2dataset writes one per shard with the "
                                    f"number of videos the shard holds ('successes')")
        n = json.loads(stats.read_text())["successes"]
        if n:
            shards.append({"url": tar.name, "captions_per_video": [1] * n})
    if not shards:
        raise FileNotFoundError(f"{folder}: no video2dataset shards (*.tar with *_stats.json) in it")
    n = sum(len(s["captions_per_video"]) for s in shards)
    return {"split": "train", "videos": n, "captions": n, "shards": shards, "format": "video2dataset"}


def sample_meta(key: str, parts: dict) -> tuple[dict, str, bytes]:
    """(vcap meta, video extension, video bytes) of one shard sample, written by `vcap shard` (``json`` holds
    ``captions``) or by video2dataset (the caption in ``txt``, ``videoid`` in ``json``)."""
    meta = json.loads(parts.pop("json")) if "json" in parts else {}
    if "captions" not in meta:
        text = parts.pop("txt", b"").decode("utf-8").strip()
        # one caption per video, as the index counts them (even an empty one)
        meta = {"video_id": str(meta.get("videoid") or meta.get("key") or key), "captions": [text],
                "start": None, "end": None}
    videos = [ext for ext in parts if "." + ext.lower() in VIDEO_EXTENSIONS]
    if not videos:
        raise VideoDecodeError(f"{meta['video_id']}", f"no video in the shard sample (parts: {sorted(parts)})")
    return meta, videos[0], parts[videos[0]]


class ShardTrainDataset(IterableDataset):
    """Training items streamed from shards; yields whole collated batches (see the module doc). ``index``:
    the index.json `vcap shard` wrote, or a folder of video2dataset shards."""

    def __init__(self, index: str | os.PathLike, vis_processor, text_processor, seed: int = 0,
                 captions: Literal["all", "one"] = "all", buffer_size: int = 256):
        self.index_path = Path(index)
        if self.index_path.is_dir():
            self.index = video2dataset_index(self.index_path)
            self.index_path = self.index_path / "index.json"  # not written: the folder the shards are in
        elif not self.index_path.is_file():
            raise FileNotFoundError(f"shard index {str(self.index_path)!r} does not exist; `vcap shard` writes it "
                                    f"(or give the folder of video2dataset's shards)")
        else:
            self.index = json.loads(self.index_path.read_text())
        self.vis_processor, self.text_processor = vis_processor, text_processor
        self.mode, self.seed, self.epoch, self.buffer_size = captions, seed, 0, buffer_size
        self.batch_size, self.rank, self.world = 1, 0, 1

    # -- set-up by the runner --------------------------------------------------------------------
    def make_loader(self, batch_size: int, num_workers: int, rank: int, world: int, pin_memory: bool) -> DataLoader:
        self.batch_size, self.rank, self.world = batch_size, rank, world
        return DataLoader(self, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def captions(self) -> list[str]:
        """Every training caption (for a tokenizer trained on them): captions.json, or a pass over the shards'
        caption files (video2dataset)."""
        path = self.index_path.parent / "captions.json"
        if path.is_file():
            return [self.text_processor(c) for c in json.loads(path.read_text())]
        return [self.text_processor(c) for shard in self.index["shards"] for key, parts in iter_shard(self._url(shard))
                for c in sample_meta(key, parts)[0]["captions"]]

    def _url(self, shard: dict) -> str:
        url = shard["url"]
        return url if ("://" in url or url.startswith("pipe:") or os.path.isabs(url)) \
            else str(self.index_path.parent / url)

    def num_items(self) -> int:
        return self.index["captions"] if self.mode == "all" else self.index["videos"]

    def __len__(self) -> int:
        """Batches per rank per epoch."""
        return (self.num_items() // self.world) // self.batch_size

    # -- the epoch plan --------------------------------------------------------------------------
    def _shard_order(self) -> list[int]:
        order = list(range(len(self.index["shards"])))
        random.Random(derive_seed(self.seed, "shards", self.epoch)).shuffle(order)
        return order

    def _items_per_shard(self, shard: dict) -> int:
        counts = shard["captions_per_video"]
        return sum(counts) if self.mode == "all" else len(counts)

    def worker_range(self, worker: int, num_workers: int) -> tuple[int, int]:
        """[start, end) of this worker's items in the epoch's global item order."""
        per_rank = self.num_items() // self.world
        batches = per_rank // self.batch_size
        lo, hi = (batches * worker) // num_workers, (batches * (worker + 1)) // num_workers
        base = self.rank * per_rank
        return base + lo * self.batch_size, base + hi * self.batch_size

    def _items(self, start: int, end: int):
        """``(position, video bytes, extension, meta, caption index or None)`` for items [start, end)."""
        pos = 0
        for s in self._shard_order():
            shard = self.index["shards"][s]
            n = self._items_per_shard(shard)
            if pos + n <= start:
                pos += n
                continue
            if pos >= end:
                return
            for key, parts in iter_shard(self._url(shard)):
                try:
                    meta, ext, data = sample_meta(key, parts)
                except VideoDecodeError as e:  # decoded (and reported as bad) like a video that does not decode
                    meta, ext, data = {"video_id": e.path, "captions": [""]}, "mp4", b""
                ks = range(len(meta["captions"])) if self.mode == "all" else [None]
                for k in ks:
                    if start <= pos < end:
                        yield pos, data, ext, meta, k
                    pos += 1
                    if pos >= end:
                        return

    def _decode(self, pos: int, data: bytes, ext: str, meta: dict, k) -> dict:
        seed = item_seed(self.seed, self.epoch, pos)
        if k is None:
            k = random.Random(seed).randrange(len(meta["captions"]))
        sample = VideoBytes(f"{self.index_path.parent}::{meta['video_id']}.{ext}", data)  # decoded from memory
        frames, mask = self.vis_processor.load(sample, seed=seed, start=meta.get("start"), end=meta.get("end"))
        video, mask = self.vis_processor(frames, seed=seed, mask=mask)
        return {"video": video, "video_mask": mask, "text_input": self.text_processor(meta["captions"][k]),
                "video_id": meta["video_id"], "key": f"{meta['video_id']}#{k}", "index": pos}

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        start, end = self.worker_range(worker, num_workers)
        rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, worker))
        buffer, batch, bad, good = [], [], [], []
        pending = 0  # failed items owed a substitute: an earlier good item again, so batches stay whole

        def emit(item):
            nonlocal pending
            try:
                out = self._decode(*item)
            except VideoDecodeError as e:
                log.warning("bad sample: %s", e)
                bad.append({"path": e.path, "reason": e.reason, "video_id": item[3]["video_id"]})
                pending += 1
                return
            good.append(out) if len(good) < 64 else good.__setitem__(rng.randrange(64), out)
            batch.append(out)

        def flush():
            nonlocal batch, bad, pending
            while pending and good and len(batch) < self.batch_size:
                batch.append(dict(rng.choice(good)))
                pending -= 1
            if len(batch) == self.batch_size:
                items = [dict(x) for x in batch]
                items[0]["bad_samples"] = bad
                batch, bad = [], []
                return collate(items)
            return None

        for item in self._items(start, end):
            buffer.append(item)
            if len(buffer) >= self.buffer_size:
                emit(buffer.pop(rng.randrange(len(buffer))))
                out = flush()
                if out is not None:
                    yield out
        while buffer or (pending and good):
            if buffer:
                emit(buffer.pop(rng.randrange(len(buffer))))
            out = flush()
            if out is not None:
                yield out
        if pending:
            raise RuntimeError(f"every video of this worker's shard range failed to decode (first: {bad[0]['path']}: "
                               f"{bad[0]['reason']})")

