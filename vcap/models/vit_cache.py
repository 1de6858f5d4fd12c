"""``run.cache_vit_features``: a frozen ViT's outputs kept per clip and reused.

A clip's entry is keyed by a hash of its pixel tensor, not by its id: the key is right by
construction (a different frame sampling, crop or resolution of the same video is a different
entry), and nothing goes stale when a processor changes. The runner allows the cache only with a
frozen ViT and deterministic processors, where each clip's pixels repeat every epoch.
"""
from __future__ import annotations

import hashlib
import logging

import torch

log = logging.getLogger(__name__)


class ViTFeatureCache:
    """In-process cache of per-clip encoder outputs, on CPU, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = int(max_bytes), 0
        self.entries: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._full_warned = False

    @staticmethod
    def key(clip: torch.Tensor) -> bytes:
        clip = clip.detach().cpu().contiguous()
        h = hashlib.blake2b(digest_size=16)
        h.update(str((tuple(clip.shape), clip.dtype)).encode())
        h.update(clip.view(torch.uint8).numpy().tobytes() if clip.numel() else b"")
        return h.digest()

    def __call__(self, clips: torch.Tensor, encode, device: torch.device) -> torch.Tensor:
        """``encode(clips[missing].to(device))`` for the clips not cached; all clips' outputs, stacked, on ``device``."""
        keys = [self.key(c) for c in clips]
        missing = {}  # key -> first row with it: a clip twice in a batch (two captions) is encoded once
        for i, k in enumerate(keys):
            if k not in self.entries and k not in missing:
                missing[k] = i
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = {}
        if missing:
            out = encode(clips[list(missing.values())].to(device))
            for j, k in enumerate(missing):
                fresh[k] = out[j]
                self._store(k, out[j])
        rows = [fresh[k] if k in fresh else self.entries[k].to(device, non_blocking=True) for k in keys]
        return torch.stack(rows)

    def _store(self, key: bytes, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if self.bytes + size > self.max_bytes:
            if not self._full_warned:
                log.warning("ViT feature cache full at %.2f GB (%d clips): further clips are encoded every time",
                            self.bytes / 1e9, len(self.entries))
                self._full_warned = True
            return
        self.entries[key] = value.detach().to("cpu").clone()
        self.bytes += size

    def stats(self, reset: bool = False) -> dict:
        """Size, and the share of clips served from the cache since the last reset."""
        total = self.hits + self.misses
        out = {"clips": len(self.entries), "gb": self.bytes / 1e9, "hit_rate": self.hits / total if total else 0.0}
        if reset:
            self.hits = self.misses = 0
        return out
