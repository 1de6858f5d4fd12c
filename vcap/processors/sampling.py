"""Which frames of a clip to read: frame indices from a video's length or its presentation timestamps."""
from __future__ import annotations

import random
from typing import Literal

import numpy as np

Sampling = Literal["uniform", "starts", "rand", "headtail", "fps", "fps_frames"]
SAMPLINGS = ("uniform", "starts", "rand", "headtail", "fps", "fps_frames")


def sample_indices(num_total: int, num_frames: int, sampling: Sampling = "uniform",
                   seed: int | None = None) -> list[int]:
    """Indices of ``num_frames`` frames out of ``num_total`` (which is at least ``num_frames``).

    ``uniform`` takes the middle frame of each of ``num_frames`` equal segments (deterministic,
    for evaluation); ``starts`` the first frame of each (LAVIS's ``load_video``: ``np.arange(0, n, n / k)``
    as integers); ``rand`` one random frame per segment; ``headtail`` (LAVIS's, seed 003's
    training sampler) half the frames at random from the first half and half from the second.
    Random strategies are reproducible from ``seed``.
    """
    if num_total < num_frames or num_frames <= 0:
        raise ValueError(f"need 0 < num_frames <= num_total, got {num_frames} of {num_total}")
    edges = np.linspace(0, num_total, num_frames + 1)
    rng = random.Random(seed)
    if sampling == "uniform":
        return [int((edges[i] + edges[i + 1]) / 2) for i in range(num_frames)]
    if sampling == "starts":  # LAVIS's float arange can give one extra start; it is dropped
        return np.arange(0, num_total, num_total / num_frames).astype(int)[:num_frames].tolist()
    if sampling == "rand":
        return [rng.randrange(int(edges[i]), max(int(edges[i]) + 1, int(np.ceil(edges[i + 1]))))
                for i in range(num_frames)]
    if sampling == "headtail":
        half, n_head = num_total // 2, num_frames // 2
        if half < n_head or num_total - half < num_frames - n_head:
            return sample_indices(num_total, num_frames, "rand", seed)
        head = sorted(rng.sample(range(half), n_head))
        tail = sorted(rng.sample(range(half, num_total), num_frames - n_head))
        return head + tail
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def frame_indices(timestamps, num_frames: int, sampling: Sampling = "uniform", start: float | None = None,
                  end: float | None = None, seed: int | None = None, sample_fps: float = 1.0,
                  fps_slice: Literal["head", "tail", "uniform"] = "uniform") -> tuple[list[int], list[bool]]:
    """(indices into the video's frames, mask of real frames) for a clip of ``num_frames``.

    ``timestamps`` are the presentation times (seconds, ascending) of every frame. ``start`` /
    ``end`` (seconds) restrict the clip to a segment. ``fps`` samples ``sample_fps`` frames per second
    of the segment (the frame shown at each instant), then slices them to ``num_frames`` by ``head``,
    ``tail`` or ``uniform``. ``fps_frames`` is CLIP4Clip's own rule (dataloaders/rawvideo_util.py): the
    frame rate truncated to an integer r (as OpenCV's CAP_PROP_FPS read by ``int``), then frames
    ``s * r + i * (r // sample_fps)`` for each second s, ``sample_fps`` per second; it equals ``fps`` at an
    integer frame rate and drifts from it at 29.97. Clips with fewer frames than ``num_frames`` repeat
    their last frame; the mask marks the real ones.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size == 0:
        raise ValueError("the video has no frames")
    lo = 0 if start is None else int(np.searchsorted(ts, start - 1e-6, side="left"))
    hi = len(ts) if end is None else int(np.searchsorted(ts, end + 1e-6, side="left"))
    if hi <= lo:
        raise ValueError(f"no frame between start={start} and end={end} (the video spans "
                         f"{ts[0]:.3f}-{ts[-1]:.3f} s)")
    if sampling in ("fps", "fps_frames"):
        if sample_fps <= 0:
            raise ValueError(f"sample_fps must be positive, got {sample_fps}")
        if sampling == "fps_frames":
            idx = _fps_frames(ts, lo, hi, start, sample_fps)
        else:
            t0 = ts[lo] if start is None else max(start, ts[lo])
            t1 = ts[hi - 1]
            times = t0 + np.arange(int(np.floor((t1 - t0) * sample_fps + 1e-6)) + 1) / sample_fps
            # the frame shown at each time: the last one that starts at or before it
            idx = np.clip(np.searchsorted(ts[lo:hi], times + 1e-6, side="right") - 1, 0, hi - lo - 1) + lo
            idx = list(dict.fromkeys(int(i) for i in idx))
        if len(idx) > num_frames:
            if fps_slice == "head":
                idx = idx[:num_frames]
            elif fps_slice == "tail":
                idx = idx[-num_frames:]
            elif fps_slice == "uniform":
                idx = [idx[i] for i in np.linspace(0, len(idx) - 1, num=num_frames, dtype=int)]
            else:
                raise ValueError(f"fps_slice must be head, tail or uniform, got {fps_slice!r}")
    elif hi - lo >= num_frames:
        idx = [lo + i for i in sample_indices(hi - lo, num_frames, sampling, seed)]
    elif sampling in SAMPLINGS:
        idx = list(range(lo, hi))
    else:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    mask = [True] * len(idx) + [False] * (num_frames - len(idx))
    return idx + [idx[-1]] * (num_frames - len(idx)), mask


def _fps_frames(ts: np.ndarray, lo: int, hi: int, start: float | None, sample_fps: float) -> list[int]:
    """CLIP4Clip's ``video_to_tensor`` frame choice over frames lo..hi of a video with timestamps ``ts``."""
    step = np.median(np.diff(ts)) if len(ts) > 1 else 1.0
    rate = max(1, int(1.0 / step + 1e-6)) if step > 0 else 1  # int(cap.get(CAP_PROP_FPS))
    per_second = max(1, int(sample_fps))
    interval = max(1, rate // per_second)
    offsets = list(range(0, rate, interval))[:per_second]
    seconds = range(int(start or 0), -(-hi // rate) + 1)  # to the last (partial) second, inclusive
    idx = [s * rate + o for s in seconds for o in offsets]
    idx = [i for i in idx if lo <= i < hi] or [lo]  # OpenCV stops at the first frame it cannot read
    return list(dict.fromkeys(idx))


# ------------------------------------------------------------------------------------------------
# PyAV
# ------------------------------------------------------------------------------------------------
