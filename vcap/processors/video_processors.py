"""Video processors: frame sampling settings, spatial transforms (the same for every frame of a
clip), normalisation, and an optional frame-order ablation (reverse / shuffle in time)."""
from __future__ import annotations

import random
from typing import Literal

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vcap.common.registry import registry
from vcap.datasets.video import read_frames, sample_clip
from vcap.processors.base import BaseProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _VideoProcessor(BaseProcessor):
    def __init__(self, num_frames: int = 8, sampling: Literal["uniform", "rand"] = "uniform",
                 image_size: int = 224, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD,
                 frame_order: Literal["normal", "reverse", "shuffle"] = "normal"):
        self.num_frames, self.sampling, self.image_size = num_frames, sampling, image_size
        self.mean, self.std = list(mean), list(std)
        if frame_order not in ("normal", "reverse", "shuffle"):
            raise ValueError(f"frame_order must be normal, reverse or shuffle, got {frame_order!r}")
        self.frame_order = frame_order

    def load(self, path, seed: int | None = None, decoded=None) -> torch.Tensor:
        """This processor's frames (uint8, T C H W) from ``path``, or from its already ``decoded`` frames."""
        if decoded is not None:
            return sample_clip(decoded, self.num_frames, self.sampling, seed=seed)
        return read_frames(path, self.num_frames, self.sampling, seed=seed)

    def _order(self, frames: torch.Tensor, seed: int | None) -> torch.Tensor:
        if self.frame_order == "reverse":
            return frames.flip(0)
        if self.frame_order == "shuffle":
            perm = list(range(frames.shape[0]))
            random.Random(seed).shuffle(perm)
            return frames[perm]
        return frames

    def _normalise(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(frames.float().div_(255.0), self.mean, self.std)

    def __call__(self, frames: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        raise NotImplementedError


@registry.register_processor("video_eval")
class VideoEvalProcessor(_VideoProcessor):
    """Resize the shorter side to ``image_size`` and centre-crop (no squashing to a square)."""

    def __call__(self, frames: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        frames = F.resize(frames, self.image_size, antialias=True)
        frames = F.center_crop(frames, [self.image_size, self.image_size])
        return self._normalise(self._order(frames, seed))


@registry.register_processor("video_train")
class VideoTrainProcessor(_VideoProcessor):
    """Random resized crop (and optional horizontal flip) drawn once per clip, applied to every frame.

    ``hflip`` is off by default: it swaps left and right, which contradicts captions that name a
    direction of motion.
    """

    def __init__(self, num_frames: int = 8, sampling: Literal["uniform", "rand"] = "rand",
                 image_size: int = 224, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD,
                 frame_order: Literal["normal", "reverse", "shuffle"] = "normal",
                 min_scale: float = 0.5, max_scale: float = 1.0, hflip: bool = False):
        super().__init__(num_frames, sampling, image_size, mean, std, frame_order)
        self.scale = (min_scale, max_scale)
        self.hflip = hflip

    def __call__(self, frames: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        # a per-clip seed makes the crop reproducible without disturbing the global RNG
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            top, left, h, w = v2.RandomResizedCrop.get_params(frames, self.scale, (3 / 4, 4 / 3))
            flip = self.hflip and bool(torch.rand(()) < 0.5)
        frames = F.resized_crop(frames, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        if flip:
            frames = F.horizontal_flip(frames)
        return self._normalise(self._order(frames, seed))
