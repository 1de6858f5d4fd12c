"""Frame processors under the names and arguments of the code whose numbers they reproduce, so that a recipe copied
from there means what it meant: LAVIS's ``alpro_video_train`` / ``alpro_video_eval`` (seed 003's BLIP-2 recipes),
CLIP4Clip's raw-video extractor, and CLIP's own image preprocessing (CLIPCap's ``clip.load``).

How they differ from vcap's own ``video_train`` / ``video_eval`` (the defaults for new work):

- ``alpro_video_*`` squash every frame to ``image_size`` x ``image_size`` while decoding (as decord's
  ``VideoReader(height, width)``), so a 16:9 video is stretched; vcap resizes the shorter side and
  crops the centre square, keeping the aspect ratio. Evaluation takes segment starts
  (``np.arange(0, n, n / k)``) where vcap takes segment middles; training crops (scale 0.5-1, bicubic), flips
  left-right half the time (which contradicts captions that name a direction) and applies RandAugment(2, 5).
- ``clip4clip_video`` and ``clip_image`` resize with bicubic interpolation from the full-size frame (vcap:
  bilinear from frames already downscaled to twice the size while decoding); CLIP4Clip takes its frames at
  whole-frame steps of the integer frame rate (``fps_frames``).
"""
from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from vcap.common.registry import registry
from vcap.common.validation import PositiveFloat, PositiveInt
from vcap.processors.randaugment import video_rand_augment
from vcap.processors.video_processors import CLIP_MEAN, CLIP_STD, VideoEvalProcessor, _VideoProcessor


@registry.register_processor("alpro_video_eval")
class AlproVideoEvalProcessor(_VideoProcessor):
    """LAVIS's ``alpro_video_eval`` (lavis/processors/alpro_processors.py, lavis/datasets/data_utils.py
    ``load_video``): ``n_frms`` frames at the starts of equal segments, each decoded straight to ``image_size`` x
    ``image_size`` (squashed, as decord 0.6.0 scales: ``vcap.processors.video_io.Scale``), scaled to [0, 1] and
    normalised with ``mean`` / ``std`` (CLIP's when unset).

    Args:
        n_frms: frames per clip (LAVIS's default is every frame; vcap needs a number).
        image_size: frame side (LAVIS's default 256; seed 003's yamls say 224).
        mean, std: per-channel normalisation (None: CLIP's).
        backend: ``auto`` / ``pyav`` (FFmpeg's scaler through PyAV) or ``decord`` (decord itself, as LAVIS; today's
            decord2 bundles a newer FFmpeg than LAVIS's decord 0.6.0, so its pixels differ from LAVIS's too).
        normalize: false hands over uint8 frames (a model that normalises itself).
    """

    SAMPLING = "starts"

    def __init__(self, n_frms: PositiveInt = 8, image_size: PositiveInt = 256, mean: tuple | None = None,
                 std: tuple | None = None, backend: Literal["auto", "pyav", "decord"] = "auto", normalize: bool = True):
        super().__init__(num_frames=n_frms, sampling=self.SAMPLING, image_size=image_size,
                         mean=CLIP_MEAN if mean is None else mean, std=CLIP_STD if std is None else std,
                         decode_scale=0, backend=backend, normalize=normalize)

    @property
    def decode_size(self) -> tuple[int, int]:
        return self.image_size, self.image_size

    def _squash(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames not already decoded at the size (cached clips, images): squashed by a bilinear resize."""
        if frames.shape[-2:] == (self.image_size, self.image_size):
            return frames
        return TF.resize(frames, [self.image_size, self.image_size], interpolation=InterpolationMode.BILINEAR,
                         antialias=True)

    def __call__(self, frames: torch.Tensor, seed: int | None = None, mask: torch.Tensor | None = None):
        return self._finish(self._squash(frames), seed, mask)


@registry.register_processor("alpro_video_train")
class AlproVideoTrainProcessor(AlproVideoEvalProcessor):
    """LAVIS's ``alpro_video_train``: "headtail" frames (half drawn from each half of the video, sorted), squashed to
    ``image_size`` while decoding, then one random resized crop per clip (area ``min_scale``-``max_scale``, aspect
    3/4-4/3, bicubic, as ``RandomResizedCropVideo``), a left-right flip half the time, and ``VideoRandomAugment(2,
    5)`` over its ten operations (``vcap.processors.randaugment``); every draw comes from the item's seed (run
    seed, epoch, index), so a resumed run sees the same clips.

    Args:
        randaugment: LAVIS 1.0.2 applies it; seed 003's fork comments it out (its alpro_processors.py), so its
            projects set false.
        (the others as ``alpro_video_eval``; ``image_size`` default 256 as LAVIS's ``from_config``)
    """

    SAMPLING = "headtail"
    augments = True

    def __init__(self, n_frms: PositiveInt = 8, image_size: PositiveInt = 256, mean: tuple | None = None,
                 std: tuple | None = None, min_scale: float = 0.5, max_scale: float = 1.0, randaugment: bool = True,
                 backend: Literal["auto", "pyav", "decord"] = "auto", normalize: bool = True):
        super().__init__(n_frms, image_size, mean, std, backend, normalize)
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"alpro_video_train needs 0 < min_scale <= max_scale <= 1, got {min_scale} and "
                             f"{max_scale}")
        self.scale, self.randaugment = (min_scale, max_scale), randaugment

    def __call__(self, frames: torch.Tensor, seed: int | None = None, mask: torch.Tensor | None = None):
        frames = self._squash(frames)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            top, left, h, w = v2.RandomResizedCrop.get_params(frames, self.scale, (3 / 4, 4 / 3))
        rng = random.Random(seed)
        # LAVIS's functional_video.resized_crop: torch's bicubic interpolate of the float crop (no antialiasing);
        # ToUint8 then truncates (LAVIS wraps the few values bicubic overshoots past 0 or 255; vcap clamps them)
        crop = frames[..., top:top + h, left:left + w].float()
        frames = F.interpolate(crop, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        frames = frames.clamp(0, 255).to(torch.uint8)
        if rng.random() < 0.5:
            frames = TF.horizontal_flip(frames)
        if self.randaugment:
            frames = video_rand_augment(frames, np.random.RandomState(None if seed is None else seed % 2**32))
        return self._finish(frames, seed, mask)


@registry.register_processor("clip_image")
class CLIPImageProcessor(VideoEvalProcessor):
    """CLIP's own preprocessing (``clip.load``'s ``_transform``, which CLIPCap's parse_coco.py and predict.py use) on
    every frame: the shorter side resized to ``image_size`` with bicubic interpolation (antialiased, as PIL's), the
    centre square cropped, CLIP's mean and std. Frames are decoded at full size (``decode_scale`` 0). Arguments as
    ``video_eval``; an image is a one-frame video."""

    def __init__(self, num_frames: PositiveInt = 1,
                 sampling: Literal["uniform", "starts", "fps", "fps_frames"] = "uniform", image_size: PositiveInt = 224,
                 sample_fps: PositiveFloat = 1.0,
                 fps_slice: Literal["head", "tail", "uniform"] = "uniform", decode_scale: float = 0.0,
                 backend: Literal["auto", "pyav", "decord"] = "auto", normalize: bool = True):
        super().__init__(num_frames=num_frames, sampling=sampling, image_size=image_size, sample_fps=sample_fps,
                         fps_slice=fps_slice, decode_scale=decode_scale, backend=backend, normalize=normalize)

    interpolation = InterpolationMode.BICUBIC


@registry.register_processor("clip4clip_video")
class CLIP4ClipVideoProcessor(CLIPImageProcessor):
    """CLIP4Clip's raw-video extractor under its own argument names (main_task_retrieval.py, dataloaders/
    rawvideo_util.py): frames at ``feature_framerate`` per second by its whole-frame rule (``fps_frames``), cut to
    ``max_frames`` by ``slice_framepos`` (0: the first, 1: the last, 2: evenly spaced), each resized (bicubic) and
    centre-cropped to ``image_resolution``, CLIP's mean and std. Shorter clips are padded with their last frame and
    masked, as CLIP4Clip's ``video_mask``. ``frame_order`` 0 keeps the order, 1 reverses it, 2 shuffles it."""

    def __init__(self, max_frames: PositiveInt = 12, feature_framerate: PositiveInt = 1,
                 slice_framepos: Literal[0, 1, 2] = 2, image_resolution: PositiveInt = 224, frame_order: Literal[0, 1, 2] = 0,
                 backend: Literal["auto", "pyav", "decord"] = "auto", normalize: bool = True):
        super().__init__(num_frames=max_frames, sampling="fps_frames", image_size=image_resolution,
                         sample_fps=feature_framerate, fps_slice=("head", "tail", "uniform")[slice_framepos],
                         backend=backend, normalize=normalize)
        self.frame_order = ("normal", "reverse", "shuffle")[frame_order]
