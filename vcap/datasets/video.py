"""Video decoding and frame sampling: one entry point, RGB uint8 (T, C, H, W) always."""
from __future__ import annotations

import os
import random
from typing import Literal

import numpy as np
import torch

Sampling = Literal["uniform", "rand"]


class VideoDecodeError(RuntimeError):
    """A file that cannot be decoded; the message names the path and the reason."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot decode video {str(path)!r}: {reason}")


def sample_indices(num_total: int, num_frames: int, sampling: Sampling = "uniform",
                   seed: int | None = None) -> list[int]:
    """Indices of ``num_frames`` frames out of ``num_total``, one per equal segment.

    ``uniform`` takes each segment's middle frame (deterministic, for evaluation); ``rand`` one
    random frame per segment, reproducible from ``seed``. Clips shorter than ``num_frames``
    repeat their last frame.
    """
    if num_total <= 0:
        raise ValueError(f"num_total must be positive, got {num_total}")
    edges = np.linspace(0, num_total, num_frames + 1)
    if sampling == "uniform":
        idx = [int((edges[i] + edges[i + 1]) / 2) for i in range(num_frames)]
    elif sampling == "rand":
        rng = random.Random(seed)
        idx = []
        for i in range(num_frames):
            lo, hi = int(edges[i]), max(int(edges[i]) + 1, int(np.ceil(edges[i + 1])))
            idx.append(rng.randrange(lo, hi))
    else:
        raise ValueError(f"sampling must be 'uniform' or 'rand', got {sampling!r}")
    return [min(i, num_total - 1) for i in idx]


def _decode_all_pyav(path: str) -> list[np.ndarray]:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream (audio-only or not a video)")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except VideoDecodeError:
        raise
    except Exception as e:  # av raises many error classes (InvalidDataError, EOFError, ...)
        raise VideoDecodeError(path, f"{type(e).__name__}: {e}") from e
    if not frames:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    return frames


def decode_all(path: str | os.PathLike) -> np.ndarray:
    """Every frame of ``path`` as uint8 RGB (N, H, W, C)."""
    path = str(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    return np.stack(_decode_all_pyav(path))


def sample_clip(frames: np.ndarray, num_frames: int, sampling: Sampling = "uniform",
                seed: int | None = None) -> torch.Tensor:
    """``num_frames`` of decoded ``frames`` (N, H, W, C) as a uint8 tensor (T, C, H, W)."""
    idx = sample_indices(len(frames), num_frames, sampling, seed)
    return torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).contiguous()


def read_frames(path: str | os.PathLike, num_frames: int, sampling: Sampling = "uniform",
                seed: int | None = None) -> torch.Tensor:
    """Decode ``num_frames`` RGB frames from ``path`` as a uint8 tensor (T, C, H, W)."""
    return sample_clip(decode_all(path), num_frames, sampling, seed)
