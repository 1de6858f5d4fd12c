"""Frame processing against the references' own code on real encoded files: LAVIS 1.0.2's ``alpro_video_eval``
(seed 003's ``vis_processor`` section, n_frms 8, image_size 224: decord squashing each frame while decoding, segment
starts), CLIP4Clip's ``RawVideoExtractorCV2`` with its dataloader's slicing (1 frame per second by whole-frame steps
of the integer frame rate, 12 frames evenly kept, bicubic resize and centre crop to 224), CLIP's image transform
(CLIPCap's preprocessing) and LAVIS's RandAugment operations, each against vcap's processor of the same name.

The videos are written here with PyAV, losslessly (so every machine decodes the same pixels): 96x64 with 37 frames
at 10 fps, 64x112 with 50 frames at 29.97 fps, 80x72 with 23 frames at 8 fps (frame counts that 8 does not divide,
both orientations). Reported: whether the frame indices are equal, and the mean and largest |difference| in
normalised units over whole frames. tests/test_reference_processors.py checks vcap against what is written to
tests/fixtures/reference_frames.npz: the indices, every frame average-pooled 8x8 (rounded), and a full-resolution
24x24 patch.

    python benchmarks/parity/frames.py --lavis-python /work/lavis/venv/bin/python --clip4clip <CLIP4Clip checkout> \\
        [--write-fixture]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "tests" / "fixtures" / "reference_frames.npz"
VIDEOS = {"wide": (96, 64, 37, 10), "tall": (64, 112, 50, Fraction(30000, 1001)), "small": (80, 72, 23, 8)}
PLAN = {"alpro": {"n_frms": 8, "image_size": 224}, "clip4clip": {"max_frames": 12, "slice_framepos": 2, "size": 224},
        # each RandAugment operation of alpro_video_train at LAVIS's magnitude 5 (both directions where there are
        # two), and Brightness / Sharpness at 1.5 as well (at 5 they are the identity)
        "augmentations": {"AutoContrast": [], "Equalize": [], "Brightness": [1.0], "Sharpness": [1.0],
                          "Brightness_1.5": [1.5], "Sharpness_1.5": [1.5], "ShearX": [0.15], "ShearX_neg": [-0.15],
                          "ShearY": [0.15], "TranslateX": [5.0], "TranslateY": [-5.0], "Rotate": [15.0],
                          "Rotate_neg": [-15.0]}}
PATCH = (slice(100, 124), slice(100, 124))  # a full-resolution window of each 224 x 224 frame
CLIP_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073))[:, None, None]
CLIP_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711))[:, None, None]


def pattern(width: int, height: int, n: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8: a colour gradient, diagonal stripes and two moving shapes (edges for the interpolation
    to show)."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rs.uniform(0, 6.28, 3)
    frames = []
    for t in range(n):
        r = 120 + 100 * np.sin(x / 7 + t / 5 + phase[0])
        g = 40 + 200 * y / height
        b = 128 + 90 * np.sin((x + y) / 5 - t / 3 + phase[2])
        img = np.stack([r, g, b], -1)
        cx, cy = (t * 3) % width, height // 3
        img[(x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) / 6) ** 2] = (250, 30, 30)
        x0, y0 = width // 2, (2 * height // 3 + t) % height
        img[y0:y0 + height // 6, max(0, x0 - t):x0 - t + width // 5] = (20, 20, 220)
        frames.append(img.clip(0, 255).astype(np.uint8))
    return np.stack(frames)


def write_inputs(root: Path) -> dict:
    """The parity videos, one image and one frame for the augmentations, under ``root``."""
    from PIL import Image

    from vcap.processors.video_io import write_video

    root.mkdir(parents=True, exist_ok=True)
    videos = {}
    for seed, (name, (w, h, n, fps)) in enumerate(VIDEOS.items()):
        path = root / f"{name}.mp4"
        write_video(path, pattern(w, h, n, seed), fps=fps, options={"qp": "0", "preset": "ultrafast"})
        videos[name] = str(path)
    Image.fromarray(pattern(120, 84, 1, 9)[0]).save(root / "image.png")
    np.save(root / "aug_frame.npy", pattern(48, 40, 1, 11)[0])
    return {"videos": videos, "image": str(root / "image.png"), **PLAN}


def normalised(frames_uint8: torch.Tensor) -> torch.Tensor:
    return (frames_uint8.float() / 255 - CLIP_MEAN) / CLIP_STD


def vcap_outputs(plan: dict, backend: str = "pyav", only_augment: bool = False) -> tuple[dict, dict]:
    """vcap's processors on the same inputs: uint8 frames (T, C, H, W) and the frame indices they read."""
    from vcap.processors import video_io as video_mod
    from vcap.processors.randaugment import OPS
    from vcap.processors.reference_processors import (AlproVideoEvalProcessor, CLIP4ClipVideoProcessor,
                                                      CLIPImageProcessor)

    out, indices = {}, {}
    chosen = video_mod.frame_indices
    for name, path in ({} if only_augment else plan["videos"]).items():
        for kind, proc in (("alpro", AlproVideoEvalProcessor(image_size=plan["alpro"]["image_size"],
                                                             n_frms=plan["alpro"]["n_frms"], normalize=False,
                                                             backend=backend)),
                           ("clip4clip", CLIP4ClipVideoProcessor(max_frames=plan["clip4clip"]["max_frames"],
                                                                 slice_framepos=plan["clip4clip"]["slice_framepos"],
                                                                 image_resolution=plan["clip4clip"]["size"],
                                                                 normalize=False, backend=backend))):
            seen = []
            video_mod.frame_indices = lambda *a, **kw: seen.append(chosen(*a, **kw)) or seen[-1]
            try:
                frames, mask = proc.load(path)
            finally:
                video_mod.frame_indices = chosen
            frames = proc(frames, mask=mask)[0]
            real = int(mask.sum())
            out[f"{kind}_{name}"], indices[f"{kind}_{name}"] = frames[:real], seen[0][0][:real]
    if not only_augment:
        image = CLIPImageProcessor(image_size=plan["clip4clip"]["size"], normalize=False)
        out["clip_image"] = image(image.load(plan["image"])[0])
    frame = torch.from_numpy(np.load(Path(plan["image"]).with_name("aug_frame.npy"))).permute(2, 0, 1)
    for case, args in plan["augmentations"].items():
        out[f"aug_{case}"] = OPS[case.split("_")[0]][0](frame, *args)
    return out, indices


def compare(ref: np.ndarray, ours: torch.Tensor, is_aug: bool) -> dict:
    """Mean and largest |difference| in normalised units (augmentations: uint8 levels)."""
    theirs = torch.from_numpy(ref).permute(2, 0, 1) if is_aug else torch.from_numpy(ref)
    if theirs.shape != ours.shape:
        return {"shape": [list(theirs.shape), list(ours.shape)]}
    if is_aug:
        d = (theirs.float() - ours.float()).abs()
        return {"mean_levels": float(d.mean()), "max_levels": float(d.max())}
    d = (normalised(theirs) - normalised(ours)).abs()
    return {"mean": float(d.mean()), "max": float(d.max())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lavis-python", required=True, help="LAVIS 1.0.2's venv (with decord, OpenCV, PIL)")
    ap.add_argument("--clip4clip", required=True, help="a CLIP4Clip checkout")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    ap.add_argument("--write-fixture", action="store_true", help=f"write {FIXTURE}")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="frames_parity_"))
    plan = write_inputs(work)
    (work / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "PYTHONPATH": ""}
    for attempt in range(5):  # decord 0.6.0 segfaults now and then (in VideoReader or at exit; seen 1 run in 3)
        done = subprocess.run([args.lavis_python, str(HERE / "frames_side.py"), "--work", str(work), "--clip4clip",
                               args.clip4clip], env=env)
        if done.returncode == 0:
            break
    else:
        raise SystemExit(f"the reference side failed five times (last exit status {done.returncode})")
    ref = dict(np.load(work / "reference_frames.npz"))
    ref_idx = json.loads((work / "reference_indices.json").read_text())
    ours, our_idx = vcap_outputs(plan)
    report = {}
    for key, value in ref.items():
        report[key] = {**compare(value, ours[key], key.startswith("aug_")),
                       **({"indices_equal": ref_idx[key] == our_idx[key], "reference_indices": ref_idx[key],
                           "vcap_indices": our_idx[key]} if key in ref_idx else {})}
        print(key, json.dumps(report[key]))
    if args.write_fixture:
        fixture = {}
        for key, value in ref.items():
            if key.startswith("aug_"):
                fixture[key] = value
                continue
            t = torch.from_numpy(value).float()
            fixture[f"{key}.pool8"] = torch.nn.functional.avg_pool2d(t, 8).round().numpy().astype(np.uint8)
            fixture[f"{key}.patch"] = value[..., PATCH[0], PATCH[1]]
            if key in ref_idx:
                fixture[f"{key}.indices"] = np.array(ref_idx[key])
        np.savez_compressed(FIXTURE, **fixture)
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size // 1024} KB)")
    return report


if __name__ == "__main__":
    main()
