"""Shard streaming: the per-epoch plan over ranks and workers, and bad files inside shards."""
import json
import shutil

import pytest
from torch.utils.data import DataLoader

from vcap.datasets.datasets.base import load_annotations
from vcap.datasets.shards import ShardTrainDataset, iter_shard, write_shards
from vcap.processors.text_processors import CaptionProcessor
from vcap.processors.video_processors import VideoTrainProcessor


@pytest.fixture(scope="module")
def shard_index(tiny_data, tmp_path_factory):
    records = load_annotations(tiny_data / "annotations" / "train.json")
    return write_shards(records, tiny_data / "videos", tmp_path_factory.mktemp("shards"), shard_size=6)


def _dataset(index, captions="all"):
    return ShardTrainDataset(index, VideoTrainProcessor(num_frames=4, image_size=32), CaptionProcessor(), seed=3,
                             captions=captions, buffer_size=16)


@pytest.mark.parametrize("captions,items", [("all", 120), ("one", 40)])
def test_ranks_and_workers_split_every_epoch_into_disjoint_whole_batches(shard_index, captions, items):
    world, workers, bs = 3, 4, 5
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            ds = _dataset(shard_index, captions)
            ds.batch_size, ds.rank, ds.world = bs, rank, world
            ds.set_epoch(epoch)
            ranges = [ds.worker_range(w, workers) for w in range(workers)]
            assert all((hi - lo) % bs == 0 for lo, hi in ranges)
            assert sum(hi - lo for lo, hi in ranges) == len(ds) * bs == (items // world) // bs * bs
            for lo, hi in ranges:
                seen.extend(pos for pos, *_ in ds._items(lo, hi))
        assert len(seen) == len(set(seen)) == world * ((items // world) // bs * bs)


def test_loader_with_workers_yields_len_batches_of_decoded_items(shard_index):
    ds = _dataset(shard_index)
    loader = ds.make_loader(batch_size=8, num_workers=2, rank=1, world=2, pin_memory=False)
    batches = list(loader)
    assert len(batches) == len(loader) == 7  # 120 / 2 ranks = 60 items: 7 whole batches of 8
    keys = [k for b in batches for k in b["key"]]
    assert len(set(keys)) == 56 and batches[0]["video"].shape == (8, 4, 3, 32, 32)
    assert len(ds.captions()) == 120


def test_a_broken_video_inside_a_shard_is_reported_and_the_batch_stays_whole(shard_index, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(shard_index.parent, shards)
    index = json.loads((shards / "index.json").read_text())
    first = shards / index["shards"][0]["url"]
    # rewrite the first shard with its second video's bytes cut short
    import webdataset as wds
    samples = list(iter_shard(str(first)))
    with open(first, "wb") as f, wds.TarWriter(f) as sink:
        for n, (key, parts) in enumerate(samples):
            if n == 1:
                parts["mp4"] = parts["mp4"][:200]
            sink.write({"__key__": key, **parts})
    ds = _dataset(shards / "index.json")
    batches = list(ds.make_loader(batch_size=8, num_workers=0, rank=0, world=1, pin_memory=False))
    assert len(batches) == 15 and all(b["video"].shape[0] == 8 for b in batches)
    bad = [x for b in batches for x in b["bad_samples"]]
    assert len(bad) == 3 and all("index.json" not in x["path"] and "::" in x["path"] for x in bad)  # 3 captions


def test_a_worker_whose_first_videos_are_broken_still_fills_its_batches(shard_index, tmp_path, monkeypatch):
    ds = _dataset(shard_index)
    real = ds._decode
    calls = []

    def first_three_fail(pos, *args):
        calls.append(pos)
        if len(calls) <= 3:
            from vcap.processors.video_io import VideoDecodeError
            raise VideoDecodeError(f"x{pos}.mp4", "damaged")
        return real(pos, *args)

    monkeypatch.setattr(ds, "_decode", first_three_fail)
    batches = list(ds.make_loader(batch_size=8, num_workers=0, rank=0, world=1, pin_memory=False))
    assert len(batches) == 15 and sum(len(b["bad_samples"]) for b in batches) == 3
