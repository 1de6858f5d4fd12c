"""LAVIS's ``VideoRandomAugment`` (lavis/processors/randaugment.py, used by ``alpro_video_train``) in torch, without
OpenCV: the same operations, magnitudes and random draws, on uint8 frames.

Where LAVIS's numpy arithmetic wraps uint8 values (AutoContrast's offset, Sharpness beyond 0..255), so does this,
so that ``alpro_video_train`` gives LAVIS's frames. For a clip, ``n`` operations are drawn once (without
replacement) and applied to every frame in the same order; the direction of a shear, translation or rotation is drawn
again for every frame, as LAVIS draws its arguments inside the per-frame call. At LAVIS's magnitude 5 (of 10), Brightness and Sharpness have factor 1.0 and leave the
frame as it is; shears are 0.15, translations 5 px, rotations 15 degrees, with grey (128) filling what moves in.
Geometric operations resample bilinearly as ``cv2.warpAffine`` does (about its centre for rotations, about the
top-left corner for shears); OpenCV's fixed-point weights make its pixels differ by a level or two.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_LEVEL = 10
FILL = 128.0
# the ten operations alpro_video_train lists, in its order
ALPRO_OPS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize", "ShearX", "ShearY", "TranslateX",
             "TranslateY", "Rotate")


def _table(img: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return table[img.long()]


def autocontrast(img: torch.Tensor) -> torch.Tensor:
    """LAVIS's ``autocontrast_func`` (cutoff 0) as it computes: each channel's table is ``levels * scale + offset``
    with ``scale = 255 / (high - low)``, but its ``offset = -low * scale`` negates ``low`` as a numpy uint8, which
    wraps to ``256 - low``: a channel whose darkest value is above 0 is pushed up and saturates to white, instead of
    being stretched. Kept, so that this processor gives LAVIS's frames."""
    out = img.clone()
    levels = torch.arange(256, dtype=torch.float64)
    for c in range(img.shape[0]):
        low, high = int(img[c].min()), int(img[c].max())
        if high > low:
            scale = 255.0 / (high - low)
            offset = ((256 - low) % 256) * scale  # LAVIS's -np.uint8(low) * scale
            out[c] = _table(img[c], (levels * scale + offset).clamp(0, 255).to(torch.uint8))
    return out


def equalize(img: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize per channel (the algorithm LAVIS reimplements)."""
    out = img.clone()
    for c in range(img.shape[0]):
        hist = torch.bincount(img[c].flatten().long(), minlength=256)
        nonzero = hist[hist != 0]
        step = int(nonzero[:-1].sum()) // 255
        if step == 0:
            continue
        n = torch.empty_like(hist)
        n[0] = step // 2
        n[1:] = hist[:-1]
        out[c] = _table(img[c], (torch.cumsum(n, 0) // step).clamp(0, 255).to(torch.uint8))
    return out


def brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return _table(img, (torch.arange(256, dtype=torch.float32) * factor).clamp(0, 255).to(torch.uint8))


def sharpness(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with a 3x3 smoothing (centre 5, others 1, over 13) of the frame; the border keeps its pixels."""
    if factor == 1.0:
        return img
    kernel = torch.ones(3, 3)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13).expand(img.shape[0], 1, 3, 3)
    x = img.float()[None]
    degenerate = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=img.shape[0])[0].round().clamp(0, 255)
    if factor == 0.0:
        return degenerate.to(torch.uint8)
    out = img.float()
    inner = (slice(None), slice(1, -1), slice(1, -1))
    out[inner] = degenerate[inner] + factor * (out[inner] - degenerate[inner])
    return (out.trunc().long() % 256).to(torch.uint8)  # LAVIS's astype(np.uint8) wraps what leaves 0..255


def warp_affine(img: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    """``cv2.warpAffine(img, M, (W, H), borderValue=128)`` with bilinear sampling: the output pixel (x, y) reads the
    input at M^-1 (x, y)."""
    h, w = img.shape[1:]
    m = torch.tensor(matrix + [[0.0, 0.0, 1.0]], dtype=torch.float64).inverse()[:2].float()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ m.T  # (H, W, 2) input pixel coordinates
    grid = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], -1)
    out = F.grid_sample(img.float()[None] - FILL, grid[None], mode="bilinear", padding_mode="zeros",
                        align_corners=True)[0] + FILL
    return out.round().clamp(0, 255).to(torch.uint8)


def shear_x(img: torch.Tensor, factor: float) -> torch.Tensor:
    return warp_affine(img, [[1.0, factor, 0.0], [0.0, 1.0, 0.0]])


def shear_y(img: torch.Tensor, factor: float) -> torch.Tensor:
    return warp_affine(img, [[1.0, 0.0, 0.0], [factor, 1.0, 0.0]])


def translate_x(img: torch.Tensor, offset: float) -> torch.Tensor:
    return warp_affine(img, [[1.0, 0.0, -offset], [0.0, 1.0, 0.0]])


def translate_y(img: torch.Tensor, offset: float) -> torch.Tensor:
    return warp_affine(img, [[1.0, 0.0, 0.0], [0.0, 1.0, -offset]])


def rotate(img: torch.Tensor, degree: float) -> torch.Tensor:
    """Counter-clockwise by ``degree`` about the centre (cv2.getRotationMatrix2D((W / 2, H / 2), degree, 1))."""
    h, w = img.shape[1:]
    cx, cy = w / 2, h / 2
    a, b = math.cos(math.radians(degree)), math.sin(math.radians(degree))
    return warp_affine(img, [[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])


def _signed(value: float, flip: bool) -> float:
    return -value if flip else value


# name -> (operation, its arguments at a level, drawn with rng as LAVIS's arg_dict draws them)
OPS = {
    "Identity": (lambda img: img, lambda level, rng: ()),
    "AutoContrast": (autocontrast, lambda level, rng: ()),
    "Equalize": (equalize, lambda level, rng: ()),
    "Brightness": (brightness, lambda level, rng: ((level / MAX_LEVEL) * 1.8 + 0.1,)),
    "Sharpness": (sharpness, lambda level, rng: ((level / MAX_LEVEL) * 1.8 + 0.1,)),
    "ShearX": (shear_x, lambda level, rng: (_signed((level / MAX_LEVEL) * 0.3, rng.random_sample() > 0.5),)),
    "ShearY": (shear_y, lambda level, rng: (_signed((level / MAX_LEVEL) * 0.3, rng.random_sample() > 0.5),)),
    "TranslateX": (translate_x, lambda level, rng: (_signed((level / MAX_LEVEL) * 10.0, rng.random_sample() > 0.5),)),
    "TranslateY": (translate_y, lambda level, rng: (_signed((level / MAX_LEVEL) * 10.0, rng.random_sample() > 0.5),)),
    "Rotate": (rotate, lambda level, rng: (_signed((level / MAX_LEVEL) * 30.0, rng.random_sample() < 0.5),)),
}


def video_rand_augment(frames: torch.Tensor, rng: np.random.RandomState, n: int = 2, level: int = 5,
                       ops: tuple[str, ...] = ALPRO_OPS) -> torch.Tensor:
    """uint8 frames (T, C, H, W) through ``n`` operations drawn from ``ops`` (the same for every frame) at
    ``level``."""
    chosen = rng.choice(list(ops), n, replace=False)
    out = []
    for frame in frames:
        for name in chosen:
            fn, args = OPS[name]
            frame = fn(frame, *args(level, rng))
        out.append(frame)
    return torch.stack(out)
