"""The reference half of the frame-processing parity check (frames.py starts it in LAVIS 1.0.2's venv, which also has
OpenCV, PIL and torchvision): LAVIS's own ``alpro_video_eval`` (decord), CLIP4Clip's own ``RawVideoExtractorCV2``
(OpenCV, PIL) with its dataloader's frame slicing, CLIP's image transform (CLIPCap), and LAVIS's RandAugment
operations (OpenCV) at fixed arguments. Never imports vcap. Writes ``reference_frames.npz`` in the work directory:
the frames as uint8 (the normalised outputs mapped back) and the frame indices each read.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073))
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711))


def to_uint8(normalised: np.ndarray, channel_axis: int) -> np.ndarray:
    """A normalised float clip back to its uint8 pixels (exact: the inputs were uint8)."""
    shape = [1] * normalised.ndim
    shape[channel_axis] = 3
    pixels = (normalised * CLIP_STD.reshape(shape) + CLIP_MEAN.reshape(shape)) * 255
    return np.rint(pixels).clip(0, 255).astype(np.uint8)


def lavis_alpro_eval(path: str, n_frms: int, image_size: int) -> tuple[np.ndarray, list[int]]:
    import decord
    from lavis.processors.alpro_processors import AlproVideoEvalProcessor

    seen = []
    get_batch = decord.VideoReader.get_batch
    decord.VideoReader.get_batch = lambda self, idx: seen.append([int(i) for i in idx]) or get_batch(self, idx)
    try:
        clip = AlproVideoEvalProcessor(image_size=image_size, n_frms=n_frms)(path)  # (C, T, H, W)
    finally:
        decord.VideoReader.get_batch = get_batch
    return to_uint8(clip.numpy(), 0).transpose(1, 0, 2, 3), seen[0]  # (T, C, H, W)


def clip4clip_frames(extractor_module, path: str, max_frames: int, slice_framepos: int, size: int):
    """RawVideoExtractorCV2(framerate=1, size) then the MSVD/MSR-VTT dataloaders' slicing (``_get_rawvideo``)."""
    import cv2

    positions = []

    class Recording(cv2.VideoCapture):
        def set(self, prop, value):
            if prop == cv2.CAP_PROP_POS_FRAMES:
                positions.append(int(value))
            return super().set(prop, value)

    extractor_module.cv2.VideoCapture = Recording
    raw = extractor_module.RawVideoExtractorCV2(framerate=1, size=size).get_video_data(path)["video"]
    read = positions[:len(raw)]  # a failed read at the end is not a frame
    keep = np.arange(len(raw))
    if max_frames < len(raw):
        keep = {0: keep[:max_frames], 1: keep[-max_frames:]}.get(
            slice_framepos, np.linspace(0, len(raw) - 1, num=max_frames, dtype=int))
    return to_uint8(raw.numpy()[keep], 1), [read[i] for i in keep]


def clip_image(extractor_module, path: str, size: int) -> np.ndarray:
    from PIL import Image

    transform = extractor_module.RawVideoExtractorCV2(size=size).transform  # CLIP's _transform(n_px)
    return to_uint8(transform(Image.open(path)).numpy()[None], 1)


def lavis_randaugment(frame: np.ndarray, cases: dict[str, list]) -> dict[str, np.ndarray]:
    """LAVIS's RandAugment functions at the plan's arguments (frames.py's ``augmentations``)."""
    from lavis.processors.randaugment import func_dict

    fill = (128, 128, 128)
    out = {}
    for name, args in cases.items():
        fn = func_dict[name.split("_")[0]]
        geometric = name.split("_")[0] in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
        out[f"aug_{name}"] = fn(frame.copy(), *args, fill) if geometric else fn(frame.copy(), *args)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--clip4clip", required=True, help="a CLIP4Clip checkout (dataloaders/rawvideo_util.py)")
    args = ap.parse_args()
    work = Path(args.work)
    util = Path(args.clip4clip) / "dataloaders" / "rawvideo_util.py"
    spec = importlib.util.spec_from_file_location("rawvideo_util", util)
    extractor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extractor)
    plan = json.loads((work / "plan.json").read_text())
    arrays, indices = {}, {}
    for name, path in plan["videos"].items():
        arrays[f"alpro_{name}"], indices[f"alpro_{name}"] = lavis_alpro_eval(path, **plan["alpro"])
        key = f"clip4clip_{name}"
        arrays[key], indices[key] = clip4clip_frames(extractor, path, **plan["clip4clip"])
    arrays["clip_image"] = clip_image(extractor, plan["image"], plan["clip4clip"]["size"])
    arrays.update(lavis_randaugment(np.load(work / "aug_frame.npy"), plan["augmentations"]))
    np.savez_compressed(work / "reference_frames.npz", **arrays)
    (work / "reference_indices.json").write_text(json.dumps(indices))
    print(f"torch {torch.__version__}; {len(arrays)} reference arrays written")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # decord 0.6.0 and OpenCV together crash in the interpreter's teardown; everything is written
