"""Video processors: frame sampling settings, spatial transforms (the same for every frame of a
clip), normalisation, and an optional frame-order ablation (reverse / shuffle in time)."""
from __future__ import annotations

import random
from typing import Literal

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from vcap.common.registry import registry
from vcap.common.validation import NonNegativeFloat, PositiveFloat, PositiveInt, Probability
from vcap.processors.base import BaseProcessor
from vcap.processors.video_io import DecodedVideo, Sampling, read_frames, sample_clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _VideoProcessor(BaseProcessor):
    """Frame sampling settings (see ``vcap.processors.video_io.read_frames``) and the shared transforms.

    ``decode_scale``: frames are downscaled while decoding so their shorter side is at most
    ``decode_scale * image_size`` (large videos never reach memory at full size); 0 turns it off.
    ``normalize: false`` hands over uint8 frames, for models whose own processor normalises (``video_llm``).
    """

    def __init__(self, num_frames: PositiveInt = 8, sampling: Sampling = "uniform",
                 image_size: PositiveInt = 224, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD,
                 frame_order: Literal["normal", "reverse", "shuffle"] = "normal", sample_fps: PositiveFloat = 1.0,
                 fps_slice: Literal["head", "tail", "uniform"] = "uniform", decode_scale: NonNegativeFloat = 2.0,
                 backend: Literal["auto", "pyav", "decord"] = "auto", normalize: bool = True):
        self.num_frames, self.sampling, self.image_size = num_frames, sampling, image_size
        self.normalize = normalize
        self.mean, self.std = list(mean), list(std)
        self.frame_order = frame_order
        self.sample_fps, self.fps_slice, self.backend = sample_fps, fps_slice, backend
        self.short_side = int(round(decode_scale * image_size)) if decode_scale else None

    @property
    def deterministic(self) -> bool:
        """The same video gives the same pixels every time (no random frames, order or augmentation)."""
        return self.sampling in ("uniform", "starts", "fps", "fps_frames") and self.frame_order != "shuffle" \
            and not self.augments

    augments = False
    decode_size: tuple[int, int] | None = None  # (height, width) every frame is scaled to while decoding (squashed)

    def load(self, path, seed: int | None = None, decoded: DecodedVideo | None = None, start: float | None = None,
             end: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames uint8 T C H W, mask of real frames) of ``path``, or of its already ``decoded`` frames."""
        kwargs = dict(seed=seed, start=start, end=end, sample_fps=self.sample_fps, fps_slice=self.fps_slice,
                      return_mask=True)
        if decoded is not None:
            return sample_clip(decoded, self.num_frames, self.sampling, **kwargs)
        return read_frames(path, self.num_frames, self.sampling, backend=self.backend, short_side=self.short_side,
                           size=self.decode_size, **kwargs)

    def _permutation(self, n: int, seed: int | None) -> list[int] | None:
        if self.frame_order == "reverse":
            return list(range(n))[::-1]
        if self.frame_order == "shuffle":
            perm = list(range(n))
            random.Random(seed).shuffle(perm)
            return perm
        return None

    def _finish(self, frames: torch.Tensor, seed: int | None, mask: torch.Tensor | None):
        """Frame order ablation (applied to the mask too), then normalisation."""
        perm = self._permutation(frames.shape[0], seed)
        if perm is not None:
            frames = frames[perm]
            mask = None if mask is None else mask[perm]
        if self.normalize:
            frames = F.normalize(frames.float().div_(255.0), self.mean, self.std)
        return frames if mask is None else (frames, mask)

    def __call__(self, frames: torch.Tensor, seed: int | None = None, mask: torch.Tensor | None = None):
        """Normalised float frames (T, C, image_size, image_size); ``(frames, mask)`` when given a mask."""
        raise NotImplementedError

    def blank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames, all-False mask) standing in for a video that could not be read: a black clip through this
        processor, so it has the shape and dtype of every other item (uint8 under ``normalize: false``) and batches
        with them; the evaluation leaves it out of the metrics."""
        frames = torch.zeros(self.num_frames, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return self(frames, seed=0, mask=torch.zeros(self.num_frames, dtype=torch.bool))


@registry.register_processor("video_eval")
class VideoEvalProcessor(_VideoProcessor):
    """Resize the shorter side to ``image_size`` and centre-crop (no squashing to a square)."""

    interpolation = InterpolationMode.BILINEAR

    def __call__(self, frames: torch.Tensor, seed: int | None = None, mask: torch.Tensor | None = None):
        frames = F.resize(frames, self.image_size, interpolation=self.interpolation, antialias=True)
        frames = F.center_crop(frames, [self.image_size, self.image_size])
        return self._finish(frames, seed, mask)


@registry.register_processor("video_train")
class VideoTrainProcessor(_VideoProcessor):
    """Random resized crop (and optional horizontal flip) drawn once per clip, applied to every frame.

    ``hflip`` is off by default: it swaps left and right, which contradicts captions that name a
    direction of motion.
    """

    augments = True  # a random crop per clip

    def __init__(self, num_frames: PositiveInt = 8, sampling: Sampling = "rand", min_scale: Probability = 0.5,
                 max_scale: Probability = 1.0, hflip: bool = False, **frames):
        """``frames``: the frame settings of ``_VideoProcessor`` (``image_size``, ``mean``, ``std``, ...); training
        samples a random frame per segment by default."""
        super().__init__(num_frames, sampling, **frames)
        self.scale = (min_scale, max_scale)
        self.hflip = hflip

    def __call__(self, frames: torch.Tensor, seed: int | None = None, mask: torch.Tensor | None = None):
        # a per-clip seed makes the crop reproducible without disturbing the global RNG
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            top, left, h, w = v2.RandomResizedCrop.get_params(frames, self.scale, (3 / 4, 4 / 3))
            flip = self.hflip and bool(torch.rand(()) < 0.5)
        frames = F.resized_crop(frames, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        if flip:
            frames = F.horizontal_flip(frames)
        return self._finish(frames, seed, mask)
