"""Video decoding: one entry point, RGB uint8 (T, C, H, W) always.

``read_frames`` picks frame *indices* from the presentation timestamps of a video (read by
demuxing, without decoding), then decodes only what those frames need: it seeks to the keyframe
before each wanted frame and decodes forward, staying in the current group of pictures when the
next wanted frame is inside it. Where seeking is unreliable (no timestamps, a decoder that
returns other timestamps than the demuxer promised), it falls back to one sequential pass. The
frames are always the ones a full decode has at those indices.

Two backends give identical frames: PyAV (default; the wheel carries FFmpeg) and decord when
installed. decord is used only where it agrees with FFmpeg's conversion: when it fails (it
rejects some frame widths) or returns odd-sized frames (its chroma upsampling differs there),
the PyAV path decodes the clip instead.
"""
from __future__ import annotations

import bisect
import io
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from vcap.processors.sampling import Sampling, frame_indices

log = logging.getLogger(__name__)

Interpolation = Literal["bilinear", "bicubic"]
# the media vcap reads: every folder walk (``vcap prepare``, ``vcap retrieve``, shards) takes these lists
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


class VideoDecodeError(RuntimeError):
    """A file that cannot be decoded; the message names the path and the reason."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot decode video {str(path)!r}: {reason}")


@dataclass(frozen=True)
class VideoBytes:
    """A video (or image) held in memory, e.g. a WebDataset sample: decoded from ``io.BytesIO`` without a
    temporary file. ``name`` (``<shard>::<key>.mp4``) stands for it in messages; its extension tells an image."""

    name: str
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.name

    def opened(self):
        return io.BytesIO(self.data)


def _source(path):
    """What PyAV and PIL open: the path, or a fresh in-memory file for ``VideoBytes``."""
    return path.opened() if isinstance(path, VideoBytes) else path


class _SeekUnreliable(Exception):
    """The decoder disagrees with the demuxer's timestamps: decode sequentially instead."""


# ------------------------------------------------------------------------------------------------
# Which frames
# ------------------------------------------------------------------------------------------------
@dataclass
class VideoIndex:
    """What demuxing (no decoding) tells about a video stream."""

    pts: list[int]  # presentation timestamps of every frame, ascending, in stream time base
    keyframes: list[int]  # presentation timestamps of the keyframes, ascending
    time_base: float
    seekable: bool  # every packet had a distinct timestamp

    @property
    def timestamps(self) -> np.ndarray:
        return np.asarray(self.pts, dtype=np.float64) * self.time_base


def _open(path: str):
    import av

    try:
        container = av.open(_source(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, EOFError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, f"{type(e).__name__}: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream (audio-only or not a video)")
    container.streams.video[0].thread_type = "AUTO"
    return container


def _index(container, stream) -> VideoIndex:
    pts, keys, seekable = [], [], True
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's flush packet
            continue
        t = packet.pts if packet.pts is not None else packet.dts
        if t is None:
            seekable = False
            t = len(pts)
        pts.append(t)
        if packet.is_keyframe:
            keys.append(t)
    order = sorted(pts)
    if len(set(order)) != len(order):
        seekable = False
    return VideoIndex(order, sorted(keys), float(stream.time_base or 1), seekable)


@dataclass(frozen=True)
class Scale:
    """How frames are scaled while FFmpeg converts them to RGB: ``short_side`` caps the shorter side (the aspect
    ratio kept), in the conversion itself; ``size`` (height, width) squashes every frame to exactly that, as decord's
    ``VideoReader(height=, width=)`` does for LAVIS: the YUV planes are scaled first and then converted, as the
    FFmpeg 4 in LAVIS's decord 0.6.0 did (within 3 levels of its pixels on average; converting and scaling in one
    step with today's FFmpeg is further off at colour edges). ``interpolation`` is FFmpeg's scaler (bilinear: PyAV's
    default, and FFmpeg 4's ``scale`` filter's, which decord 0.6.0 used; or bicubic)."""

    short_side: int | None = None
    size: tuple[int, int] | None = None
    interpolation: Interpolation = "bilinear"

    def of(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) to convert a (width x height) frame to."""
        if self.size is not None:
            return self.size[1], self.size[0]
        if not self.short_side or min(width, height) <= self.short_side:
            return width, height
        s = self.short_side / min(width, height)
        return max(1, round(width * s)), max(1, round(height * s))


def _to_rgb(frame, scale: Scale) -> np.ndarray:
    """uint8 (H, W, 3), scaled during the colour conversion and turned upright."""
    k = round((frame.rotation or 0) / 90) % 4  # the display matrix's counter-clockwise angle
    w, h = scale.of(*((frame.height, frame.width) if k % 2 else (frame.width, frame.height)))
    if k % 2:  # the size is the upright frame's
        w, h = h, w
    if scale.size is not None and (w, h) != (frame.width, frame.height):
        frame = frame.reformat(width=w, height=h, interpolation=scale.interpolation.upper())  # the YUV planes first
    array = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation=scale.interpolation.upper())
    return np.ascontiguousarray(np.rot90(array, k)) if k else array


def _decode_seek(container, stream, index: VideoIndex, wanted: list[int], scale: Scale) -> dict[int, np.ndarray]:
    """Frames at the sorted, distinct indices ``wanted``: seek to each one's keyframe, decode forward.

    On the way to a wanted frame the decoder skips non-reference frames (nothing depends on
    them), except the wanted ones themselves.
    """
    targets = {index.pts[i] for i in wanted}
    ctx = stream.codec_context

    def frames_from_here():
        for packet in container.demux(stream):
            ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in targets else "NONREF"
            yield from packet.decode()

    out, frames, last = {}, None, None
    try:
        for i in wanted:
            target = index.pts[i]
            key = index.keyframes[max(0, bisect.bisect_right(index.keyframes, target) - 1)] if index.keyframes else 0
            if frames is None or last is None or key > last:
                container.seek(key, stream=stream, backward=True, any_frame=False)
                frames = frames_from_here()
            for frame in frames:
                if frame.pts is None:
                    raise _SeekUnreliable
                last = frame.pts
                if frame.pts == target:
                    out[i] = _to_rgb(frame, scale)
                    break
                if frame.pts > target:
                    raise _SeekUnreliable
            else:
                raise _SeekUnreliable
    finally:
        ctx.skip_frame = "DEFAULT"
    return out


def _decode_sequential(container, stream, wanted: list[int], scale: Scale) -> dict[int, np.ndarray]:
    out, todo = {}, set(wanted)
    for n, frame in enumerate(container.decode(stream)):
        if n in todo:
            out[n] = _to_rgb(frame, scale)
            if len(out) == len(todo):
                break
    return out


def _read_pyav(path: str, select, scale: Scale, seek: bool = True) -> np.ndarray:
    """``select(timestamps) -> indices``; returns those frames (N, H, W, 3)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        try:
            index = _index(container, stream)
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"cannot demux: {type(e).__name__}: {e}") from e
        if not index.pts:
            raise VideoDecodeError(path, "the video stream has no frames")
        indices = select(index.timestamps)
        wanted = sorted(set(indices))
        frames = None
        if seek and index.seekable:
            try:
                frames = _decode_seek(container, stream, index, wanted, scale)
            except _SeekUnreliable:
                log.debug("%s: seeking is unreliable, decoding sequentially", path)
            except av.FFmpegError:
                pass  # a seek the demuxer cannot do; the sequential pass reports real damage
        if frames is None:  # one pass from the start, in a fresh container
            container.close()
            container = _open(path)
            stream = container.streams.video[0]
            try:
                frames = _decode_sequential(container, stream, wanted, scale)
            except av.FFmpegError as e:
                raise VideoDecodeError(path, f"{type(e).__name__}: {e}") from e
    except (av.FFmpegError, OSError, EOFError) as e:  # damage; anything else is a bug and propagates
        raise VideoDecodeError(path, f"{type(e).__name__}: {e}") from e
    finally:
        container.close()
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoDecodeError(path, f"frames {missing[:5]} of {len(index.pts)} could not be decoded "
                                     "(truncated or damaged stream)")
    return np.stack([frames[i] for i in indices])


# ------------------------------------------------------------------------------------------------
# decord and images
# ------------------------------------------------------------------------------------------------
def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


_decord_warned: set[str] = set()


def _read_decord(path: str, select, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """The frames by decord (scaled to ``size`` (height, width) by decord itself, as LAVIS reads them), or None where
    decord cannot give PyAV's frames (the caller uses PyAV)."""
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1, **({"height": size[0], "width": size[1]} if size else {}))
        n = len(reader)
        if n == 0:
            return None
        timestamps = reader.get_frame_timestamp(range(n))[:, 0]
        indices = select(timestamps)
        distinct = sorted(set(indices))
        frames = reader.get_batch(distinct).asnumpy()
    except VideoDecodeError:  # the requested segment is not in the video
        raise
    except Exception as e:  # DECORDError, RuntimeError: decord cannot read it, PyAV will say why or decode it
        reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        if reason not in _decord_warned:
            _decord_warned.add(reason)
            log.warning("decord failed on %s (%s); decoding with PyAV instead", path, reason)
        return None
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        return None  # decord's colour conversion differs from FFmpeg's at odd sizes
    pos = {i: k for k, i in enumerate(distinct)}
    return frames[[pos[i] for i in indices]]


def _read_image(path: str) -> np.ndarray:
    """(1, H, W, 3): an image is a one-frame video (turned upright by its EXIF orientation)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(_source(path)) as image:
            array = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception as e:
        raise VideoDecodeError(path, f"cannot decode image: {type(e).__name__}: {e}") from e
    return array[None]


# ------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------
def _check_file(path) -> None:
    if isinstance(path, VideoBytes):
        if not path.data:
            raise VideoDecodeError(path, "the sample is empty (0 bytes)")
        return
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")


def read_frames(path: str | os.PathLike, num_frames: int, sampling: Sampling = "uniform",
                start: float | None = None, end: float | None = None, seed: int | None = None,
                backend: Literal["auto", "pyav", "decord"] = "auto", *, sample_fps: float = 1.0,
                fps_slice: Literal["head", "tail", "uniform"] = "uniform", short_side: int | None = None,
                size: tuple[int, int] | None = None, interpolation: Interpolation = "bilinear",
                return_mask: bool = False, seek: bool = True):
    """``num_frames`` RGB frames of ``path`` (a file, or ``VideoBytes`` in memory) as a uint8 tensor (T, C, H, W).

    See ``frame_indices`` for ``sampling``, ``start``, ``end``, ``sample_fps`` and ``fps_slice``.
    ``short_side`` downscales large frames during decoding so their shorter side is at most
    that; ``size`` (height, width) scales every frame to exactly that instead (squashed, as LAVIS's
    decord loading does), with FFmpeg's ``interpolation`` (see ``Scale``).
    ``backend``: ``auto`` and ``pyav`` decode with PyAV, ``decord`` with decord. Images
    (jpg, png, ...) are one-frame videos. With ``return_mask`` the result is ``(frames, mask)``,
    the mask (T,) marking real frames (False for repeats of the last frame of a short clip).
    Raises ``VideoDecodeError`` naming the file and the reason for anything undecodable.
    """
    path = path if isinstance(path, VideoBytes) else str(path)
    _check_file(path)
    chosen: dict = {}
    scale = Scale(short_side, tuple(size) if size else None, interpolation)

    def select(timestamps):
        try:
            chosen["indices"], chosen["mask"] = frame_indices(
                timestamps, num_frames, sampling, start, end, seed, sample_fps, fps_slice)
        except ValueError as e:
            raise VideoDecodeError(path, str(e)) from e
        return chosen["indices"]

    if str(path).lower().endswith(IMAGE_EXTENSIONS):
        image = _read_image(path)
        array = image[select(np.zeros(1))]
    else:
        array = None
        if backend == "decord" and not isinstance(path, VideoBytes):  # decord reads files; bytes go to PyAV
            if not decord_available():
                raise ImportError("backend='decord' needs decord: pip install decord2 (or decord)")
            array = _read_decord(path, select, size)
        elif backend not in ("auto", "pyav"):
            raise ValueError(f"backend must be auto, pyav or decord, got {backend!r}")
        if array is None:
            array = _read_pyav(path, select, scale, seek=seek)
    return _clip(_resize(array, scale), chosen["mask"], return_mask)


def _clip(array: np.ndarray, mask: list[bool], return_mask: bool):
    """(N, H, W, 3) uint8 -> (T, C, H, W) tensor, with the mask of real frames when asked."""
    frames = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    return (frames, torch.tensor(mask)) if return_mask else frames


def _resize(array: np.ndarray, scale: Scale) -> np.ndarray:
    """(N, H, W, 3) frames that FFmpeg did not scale (an image, decord's) as ``scale`` asks, with torchvision's
    antialiased resize."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    w, h = scale.of(array.shape[2], array.shape[1])
    if (h, w) == array.shape[1:3]:
        return array
    t = torch.from_numpy(array).permute(0, 3, 1, 2)
    mode = InterpolationMode.BICUBIC if scale.interpolation == "bicubic" else InterpolationMode.BILINEAR
    return F.resize(t, [h, w], interpolation=mode, antialias=True).permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class DecodedVideo:
    """Every frame of a video and its timestamps (for in-memory caches of small datasets)."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    timestamps: np.ndarray  # (N,) seconds


def decode_all(path: str | os.PathLike, short_side: int | None = None) -> DecodedVideo:
    """Every frame of ``path`` (sequential decode), the shorter side at most ``short_side``."""
    path = str(path)
    _check_file(path)
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return DecodedVideo(_read_image(path), np.zeros(1))
    ts: dict = {}

    def everything(timestamps):
        ts["t"] = timestamps
        return list(range(len(timestamps)))

    frames = _read_pyav(path, everything, Scale(short_side), seek=False)
    return DecodedVideo(frames, ts["t"])


def sample_clip(video: DecodedVideo, num_frames: int, sampling: Sampling = "uniform", seed: int | None = None,
                start: float | None = None, end: float | None = None, return_mask: bool = False, **kwargs):
    """``read_frames`` on an already decoded video: the same frames for the same arguments."""
    indices, mask = frame_indices(video.timestamps, num_frames, sampling, start, end, seed, **kwargs)
    return _clip(video.frames[indices], mask, return_mask)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8, codec: str = "libx264",
                pix_fmt: str = "yuv420p", options: dict | None = None, gop: int | None = None,
                rotation: int | None = None, pts_ms: list[int] | None = None) -> None:
    """Encode RGB ``frames`` (N, H, W, 3) with PyAV: used by the synthetic data, tests and benchmarks.

    ``rotation`` writes a display matrix (degrees counter-clockwise); ``pts_ms`` gives each frame
    its own timestamp (variable frame rate).
    """
    import fractions

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for n, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[n]), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
