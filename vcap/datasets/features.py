"""Cached frozen-encoder features: run a model's frozen CLIP once per video, train from the cache.

``vcap extract-features`` writes, per split, safetensors shards of per-video frame embeddings
(``<video_id>`` -> (T, D), ``<video_id>::mask`` -> (T,)) and merges them into ``index.json``
(video id -> shard, plus the model and processor signature the features came from). A dataset
with ``features: <dir>`` then yields ``clip_features`` and ``video_mask`` instead of decoding
video. Frames are sampled by the evaluation processor (deterministic), as CLIPCap precomputes one
embedding per image.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vcap.common.checkpoint import write_json
from vcap.datasets.datasets.base import collate


class FeatureStore:
    """Read access to a feature cache directory (shards are opened lazily, per process)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"feature cache {str(self.root)!r} has no index.json; "
                                    "`vcap extract-features` writes it")
        data = json.loads(index.read_text())
        self.videos: dict[str, str] = data["videos"]
        self.signature = data.get("signature")
        self._open: dict = {}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.videos

    def get(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        if video_id not in self.videos:
            raise KeyError(f"video {video_id!r} is not in the feature cache {self.root} "
                           "(extract the features of its split first)")
        from safetensors import safe_open

        shard = self.videos[video_id]
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.root / shard), framework="pt")
        f = self._open[shard]
        return f.get_tensor(video_id), f.get_tensor(f"{video_id}::mask")

    def __getstate__(self):  # DataLoader workers reopen shards themselves
        return {**self.__dict__, "_open": {}}


@torch.no_grad()
def extract_features(model, dataset, out: str | os.PathLike, split: str, signature: str, batch_size: int = 16,
                     shard_size: int = 1000) -> dict:
    """Embed every video of ``dataset`` (an evaluation dataset) with ``model.frame_features``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"signature": signature, "videos": {}}
    if index.get("signature") != signature:
        raise ValueError(f"{out} holds features of another model or processor ({index.get('signature')}); "
                         f"these would be {signature}: use another --out")
    model.eval()
    shard, count, bad = {}, 0, []

    def flush():
        nonlocal shard, count
        if shard:
            name = f"{split}-{count:05d}.safetensors"
            save_file(shard, str(out / name))
            for key in shard:
                if not key.endswith("::mask"):
                    index["videos"][key] = name
            shard, count = {}, count + 1

    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        bad.extend(batch.pop("bad_samples"))
        emb, mask = model.frame_features(batch)
        for vid, e, m, ok in zip(batch["video_id"], emb.cpu(), mask.cpu(), batch["valid"].tolist()):
            if ok:
                shard[vid], shard[f"{vid}::mask"] = e.contiguous(), m.contiguous()
        if len(shard) >= 2 * shard_size:
            flush()
    flush()
    write_json(index_path, index)
    return {"split": split, "videos": len(dataset) - len(bad), "bad": bad, "out": str(out)}
