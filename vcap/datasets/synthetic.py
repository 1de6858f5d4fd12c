"""A generated video dataset: coloured shapes moving over a background, written as real H.264 files.

Captions name size, colour, shape, motion direction and background, in several paraphrases per
video. The start position is random, so one frame cannot tell the direction: the model has to
look at frame order. Evaluation splits (val, test) never repeat an attribute combination, so each
retrieval query has exactly one right video. Everything is deterministic from ``seed``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vcap.processors import video_io as video

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3  # 3: lossless H.264, so that a seed gives the same decoded clips
COLOURS = {
    "red": (220, 30, 30), "green": (30, 190, 60), "blue": (40, 70, 240),
    "yellow": (240, 220, 40), "purple": (160, 50, 200), "orange": (250, 140, 20),
}
BACKGROUNDS = {"black": (10, 10, 10), "gray": (120, 120, 120), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle", "cross")
DIRECTIONS = ("left", "right", "up", "down")
SIZES = ("small", "big")
DIR_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

_SIZE_WORDS = {"small": ("small", "little", "tiny"), "big": ("big", "large", "huge")}
_DIR_WORDS = {
    "left": ("left", "to the left", "leftward"), "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "upwards"), "down": ("down", "downward", "downwards"),
}
_TEMPLATES = (
    "a {size} {colour} {shape} moves {dir} on a {bg} background",
    "a {size} {colour} {shape} is moving {dir} over a {bg} background",
    "the {size} {colour} {shape} slides {dir} across a {bg} screen",
    "on a {bg} background a {size} {colour} {shape} travels {dir}",
    "a {colour} {shape} that is {size} goes {dir} in front of a {bg} background",
    "there is a {size} {colour} {shape} moving {dir} against {bg}",
    "a {size} {shape} coloured {colour} drifts {dir} on {bg}",
    "{size} {colour} {shape} heading {dir} over a {bg} backdrop",
)


@dataclass(frozen=True)
class Attributes:
    colour: str
    shape: str
    direction: str
    size: str
    background: str


ALL_ATTRIBUTES = [Attributes(*a) for a in itertools.product(COLOURS, SHAPES, DIRECTIONS, SIZES, BACKGROUNDS)]


def captions_for(attr: Attributes, rng: random.Random, num: int) -> list[str]:
    templates = rng.sample(_TEMPLATES, k=min(num, len(_TEMPLATES)))
    return [
        t.format(size=rng.choice(_SIZE_WORDS[attr.size]), colour=attr.colour, shape=attr.shape,
                 dir=rng.choice(_DIR_WORDS[attr.direction]), bg=attr.background)
        for t in templates
    ]


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":  # apex up
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.5 + 0.5)
    if shape == "cross":
        arm = r * 0.38
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(attr: Attributes, num_frames: int, size: int, rng: random.Random) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip. The object travels 0.4 of the frame.

    Left- and right-moving clips (likewise up and down) cover the same positions, only in reverse
    order, so a frame whose time is unknown does not tell the direction.
    """
    r = size * (0.16 if attr.size == "small" else 0.25)
    travel = size * 0.4
    vx, vy = DIR_VECTORS[attr.direction]
    margin = r + 1
    # start anywhere the whole path stays inside the frame
    lo_x = margin + (travel if vx < 0 else 0)
    hi_x = size - margin - (travel if vx > 0 else 0)
    lo_y = margin + (travel if vy < 0 else 0)
    hi_y = size - margin - (travel if vy > 0 else 0)
    x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    bg = np.array(BACKGROUNDS[attr.background], np.uint8)
    fg = np.array(COLOURS[attr.colour], np.uint8)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        s = t / max(1, num_frames - 1)
        frame = np.broadcast_to(bg, (size, size, 3)).copy()
        frame[_shape_mask(attr.shape, x0 + vx * travel * s, y0 + vy * travel * s, r, size)] = fg
        frames[t] = frame
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> None:
    """Encode (T, H, W, 3) uint8 frames as lossless H.264 MP4 (4:4:4, crf 0). Lossless, because libx264's lossy
    decisions are not repeatable from one process to the next (the same frames at crf 12 decode differently in
    about one file of ten): the same seed must give the same clips, which runs compare."""
    video.write_video(path, frames, fps, pix_fmt="yuv444p", options={"crf": "0", "preset": "veryfast"})


ATTRIBUTES = ("colour", "shape", "size", "direction", "background")  # _word_values' keys


def _word_values() -> dict[str, dict[str, str]]:
    """attribute -> {caption word: attribute value}."""
    return {
        "colour": {c: c for c in COLOURS},
        "shape": {s: s for s in SHAPES},
        "size": {w: size for size, words in _SIZE_WORDS.items() for w in words},
        "direction": {w.split()[-1]: d for d, words in _DIR_WORDS.items() for w in words},
        "background": {b: b for b in BACKGROUNDS},
    }


def attribute_accuracy(preds: dict[str, str], attributes: dict[str, dict]) -> dict[str, float]:
    """Percent of captions that name exactly the right value of each attribute (and no other value).

    ``preds`` maps video id to caption, ``attributes`` video id to its generating attributes.

    ``attr_direction_sign`` is the order-only part of direction: among captions that name one direction
    on the right axis (left/right or up/down), the percent with the right sign. Frames without their
    order still show the axis (the positions spread along it), so a model blind to order sits at 50.
    """
    vocab = _word_values()
    hits = {a: 0 for a in vocab}
    on_axis = sign = 0
    for vid, caption in preds.items():
        words = caption.lower().split()
        for attr, table in vocab.items():
            named = {table[w] for w in words if w in table}
            hits[attr] += named == {attributes[vid][attr]}
            if attr == "direction" and len(named) == 1:
                truth, (said,) = attributes[vid][attr], named
                if DIR_VECTORS[said] in (DIR_VECTORS[truth], tuple(-v for v in DIR_VECTORS[truth])):  # same axis
                    on_axis += 1
                    sign += said == truth
    n = max(1, len(preds))
    out = {f"attr_{a}": 100.0 * h / n for a, h in hits.items()}
    out["attr_direction_sign"] = 100.0 * sign / on_axis if on_axis else 0.0
    return out


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the values come from the dataset card (its ``build_info``), the one place of defaults."""

    seed: int
    num_train: int
    num_val: int
    num_test: int
    num_frames: int
    size: int
    fps: int
    captions_per_video: int

    def __post_init__(self):
        for split in ("val", "test"):
            n = getattr(self, f"num_{split}")
            if n > len(ALL_ATTRIBUTES):
                raise ValueError(f"num_{split}={n}: evaluation splits use distinct attribute combinations, "
                                 f"at most {len(ALL_ATTRIBUTES)}")
        if self.size % 2 or self.size < 16:
            raise ValueError(f"size={self.size}: expected an even number of pixels >= 16")
        if self.num_frames < 2:
            raise ValueError(f"num_frames={self.num_frames}: motion needs at least 2 frames")

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _split_attributes(spec: SyntheticSpec, rng: random.Random) -> dict[str, list[Attributes]]:
    pool = list(ALL_ATTRIBUTES)
    return {
        "train": [rng.choice(pool) for _ in range(spec.num_train)],
        "val": rng.sample(pool, spec.num_val),
        "test": rng.sample(pool, spec.num_test),
    }


def generate(spec: SyntheticSpec, out_dir: str | os.PathLike) -> Path:
    """Write videos and vcap annotation files under ``out_dir``; skip if already complete.

    The directory is built under a temporary name and renamed when complete, so an interrupted
    generation is never mistaken for a finished one.
    """
    out_dir = Path(out_dir)
    if (out_dir / "DONE").is_file():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "videos").mkdir(parents=True)
    (tmp / "annotations").mkdir()
    rng = random.Random(spec.seed)
    splits = _split_attributes(spec, rng)
    summary = {}
    for split, attrs in splits.items():
        records = []
        for i, attr in enumerate(attrs):
            vid = f"{split}{i:05d}"
            write_video(tmp / "videos" / f"{vid}.mp4", render_frames(attr, spec.num_frames, spec.size, rng), spec.fps)
            records.append({"video_id": vid, "video": f"{vid}.mp4",
                            "captions": captions_for(attr, rng, spec.captions_per_video),
                            "attributes": asdict(attr)})
        (tmp / "annotations" / f"{split}.json").write_text(json.dumps(records, indent=1))
        summary[split] = len(records)
    (tmp / "spec.json").write_text(json.dumps({**asdict(spec), "version": GENERATOR_VERSION, "counts": summary}))
    (tmp / "DONE").write_text("ok\n")
    if out_dir.exists():  # a stale partial directory from an older layout
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("generated synthetic videos %s in %s", summary, out_dir)
    return out_dir
