"""Processors under the references' names give the references' frames: LAVIS 1.0.2's ``alpro_video_eval`` (seed 003's
section: n_frms 8, image_size 224), CLIP4Clip's raw-video extractor, CLIP's image transform and LAVIS's RandAugment
operations. tests/fixtures/reference_frames.npz holds what the references' own code (decord 0.6.0, OpenCV, PIL, in
LAVIS's venv) gave on the same losslessly encoded videos, recorded by benchmarks/parity/frames.py: the frame
indices, every frame pooled 8x8 and a full-resolution patch."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "parity"))
from frames import FIXTURE, PATCH, normalised, vcap_outputs, write_inputs  # noqa: E402

from vcap.processors import build_processor  # noqa: E402
from vcap.processors.video_io import decord_available  # noqa: E402

REF = dict(np.load(FIXTURE))
TOLERANCE = {"alpro": 0.05, "clip4clip": 0.005, "clip_image": 0.005}  # mean |difference|, normalised units


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("parity_videos"))


def differences(key: str, ours: torch.Tensor) -> tuple[float, float]:
    """Mean |difference| in normalised units: over the 8x8-pooled frames, and over the full-resolution patch."""
    pooled = torch.nn.functional.avg_pool2d(ours.float(), 8).round()
    d_pool = (normalised(torch.from_numpy(REF[f"{key}.pool8"])) - normalised(pooled)).abs().mean()
    patch = ours[..., PATCH[0], PATCH[1]]
    d_patch = (normalised(torch.from_numpy(REF[f"{key}.patch"])) - normalised(patch)).abs().mean()
    return float(d_pool), float(d_patch)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_frames_equal_the_references_within_tolerance(plan, backend):
    if backend == "decord" and not decord_available():
        pytest.skip("decord is not installed")
    ours, indices = vcap_outputs(plan, backend=backend)
    keys = [k for k in ours if not k.startswith("aug_")]
    assert len(keys) == 7
    for key in keys:
        if f"{key}.indices" in REF:
            assert indices[key] == REF[f"{key}.indices"].tolist(), key
        assert tuple(ours[key].shape[-2:]) == (224, 224) and len(ours[key]) == len(REF[f"{key}.pool8"]), key
        d_pool, d_patch = differences(key, ours[key])
        limit = TOLERANCE[key.split("_")[0] if not key.startswith("clip_image") else "clip_image"]
        assert d_pool <= limit and d_patch <= limit, f"{key}: pooled {d_pool:.4f}, patch {d_patch:.4f} > {limit}"


def test_what_differs_from_vcaps_own_processors(plan):
    """The references' frames are not vcap's defaults: alpro squashes where video_eval crops, and takes segment
    starts where video_eval takes middles (the first frame is 0, not a middle)."""
    frames, _ = build_processor(OmegaConf.create({"name": "video_eval", "num_frames": 8, "image_size": 224,
                                                  "normalize": False})).load(plan["videos"]["wide"])
    assert REF["alpro_wide.indices"][0] == 0
    own = build_processor(OmegaConf.create({"name": "video_eval", "num_frames": 8, "image_size": 224,
                                            "normalize": False}))(frames)
    assert differences("alpro_wide", own)[0] > 2 * TOLERANCE["alpro"]


def test_randaugment_operations_are_lavis(plan):
    """Each of alpro_video_train's ten operations against LAVIS's OpenCV functions (magnitude 5, and 1.5 for the two
    that are the identity there): table operations exactly, the geometric ones within OpenCV's fixed-point rounding."""
    ours, _ = vcap_outputs(plan, only_augment=True)
    for key, theirs in ((k, v) for k, v in REF.items() if k.startswith("aug_")):
        d = (torch.from_numpy(theirs).permute(2, 0, 1).float() - ours[key].float()).abs()
        if key.split("_")[1] in ("ShearX", "ShearY", "Rotate"):
            assert d.mean() < 0.2 and d.max() <= 4, (key, float(d.mean()), float(d.max()))
        else:
            assert d.max() == 0, (key, float(d.max()))


def test_alpro_train_samples_headtail_crops_flips_and_is_reproducible(plan):
    """Seed 003's training section: headtail frames (sorted, half from each half), one crop and flip per clip, from
    the item's seed; randaugment false (the seed's fork) leaves the pixels to the crop."""
    proc = build_processor(OmegaConf.create({"name": "alpro_video_train", "n_frms": 8, "image_size": 224,
                                             "randaugment": False}))
    from vcap.processors import video_io as video_mod

    chosen, seen = video_mod.frame_indices, []
    video_mod.frame_indices = lambda *a, **kw: seen.append(chosen(*a, **kw)) or seen[-1]
    try:
        clips = []
        for s in (1, 1, 2):
            frames, mask = proc.load(plan["videos"]["tall"], seed=s)
            clips.append(proc(frames, seed=s, mask=mask))
    finally:
        video_mod.frame_indices = chosen
    (a, _), (b, _), (c, _) = clips
    assert torch.equal(a, b) and not torch.equal(a, c)
    head, tail = seen[0][0][:4], seen[0][0][4:]
    assert head == sorted(head) and tail == sorted(tail) and max(head) < 25 <= min(tail)  # 50 frames
    assert a.shape == (8, 3, 224, 224)
    augmented = build_processor(OmegaConf.create({"name": "alpro_video_train", "n_frms": 8, "image_size": 224}))
    frames, mask = augmented.load(plan["videos"]["tall"], seed=1)
    assert not torch.equal(augmented(frames, seed=1, mask=mask)[0], a)  # RandAugment changes pixels


def test_seed_003_processor_sections_build_as_written():
    """A vis_processor / text_processor section copied from seed 003's yamls works unchanged."""
    for section in ({"name": "alpro_video_train", "n_frms": 8, "image_size": 224},
                    {"name": "alpro_video_eval", "n_frms": 16, "image_size": 224}, {"name": "blip_caption"}):
        assert build_processor(OmegaConf.create(section)) is not None
    caption = build_processor(OmegaConf.create({"name": "blip_caption"}))
    assert caption("A man is (playing) a guitar!!  On stage.") == "a man is playing a guitar on stage"
    from vcap.common.validation import ConfigError

    with pytest.raises(ConfigError, match="model.prompt"):  # the prompt lives in the model config only
        build_processor(OmegaConf.create({"name": "blip_caption", "prompt": "a video of "}))
