import json

import av
import numpy as np
import pytest
import torch

from conftest import TINY_SPEC
from vcap.datasets.synthetic import (ALL_ATTRIBUTES, Attributes, SyntheticSpec, attribute_accuracy, generate,
                                     render_frames)
from vcap.processors.text_processors import CaptionProcessor
from vcap.processors.tokenizer import WordTokenizer
from vcap.processors.video_processors import VideoEvalProcessor, VideoTrainProcessor


def full_decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_generated_files_are_real_h264_with_the_card_frame_count(tiny_data):
    path = tiny_data / "videos" / "train00000.mp4"
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (32, 32)
    assert full_decode(path).shape == (8, 32, 32, 3)


def test_generation_is_deterministic_and_seed_dependent(tmp_path):
    """The same seed gives the same captions and every video the same decoded frames (lossy libx264 did not:
    about one file in ten decoded differently from one run to the next)."""
    small = {**TINY_SPEC, "num_train": 30, "num_val": 3, "num_test": 3, "num_frames": 4}
    spec = SyntheticSpec(**{**small, "seed": 1})
    other = SyntheticSpec(**{**small, "seed": 2})
    a, b, c = generate(spec, tmp_path / "a"), generate(spec, tmp_path / "b"), generate(other, tmp_path / "c")
    ann = lambda d: (d / "annotations" / "train.json").read_text()  # noqa: E731
    assert ann(a) == ann(b) != ann(c)
    videos = sorted(p.name for p in (a / "videos").glob("*.mp4"))
    assert len(videos) == 36
    differ = [v for v in videos if not np.array_equal(full_decode(a / "videos" / v), full_decode(b / "videos" / v))]
    assert not differ, differ
    assert spec.key() != other.key()


def test_eval_splits_have_unique_attributes_and_captions_name_them(tiny_data):
    for split in ("val", "test"):
        records = json.loads((tiny_data / "annotations" / f"{split}.json").read_text())
        combos = [tuple(r["attributes"].values()) for r in records]
        assert len(set(combos)) == len(combos)
        for r in records:
            a = r["attributes"]
            assert len(r["captions"]) == 3 and len(set(r["captions"])) == 3
            for cap in r["captions"]:
                assert a["colour"] in cap and a["shape"] in cap and a["background"] in cap
                assert a["direction"] in cap.replace("leftward", "left").replace("rightward", "right").replace(
                    "upward", "up").replace("downward", "down")


def test_direction_is_not_visible_in_one_frame():
    """Left and right clips cover the same positions; only the frame order differs."""
    import random

    size, attr = 32, ALL_ATTRIBUTES[0]
    left = Attributes(attr.colour, attr.shape, "left", attr.size, attr.background)
    right = Attributes(attr.colour, attr.shape, "right", attr.size, attr.background)
    fl = render_frames(left, 5, size, random.Random(0))
    fr = render_frames(right, 5, size, random.Random(0))
    # a right-moving clip starting where the left one ends is its time reversal
    starts_l = [np.argwhere((f != f[0, 0]).any(-1))[:, 1].mean() for f in fl]
    starts_r = [np.argwhere((f != f[0, 0]).any(-1))[:, 1].mean() for f in fr]
    assert starts_l[0] > starts_l[-1] and starts_r[0] < starts_r[-1]


def test_spec_validation():
    with pytest.raises(ValueError, match="num_test=10000"):
        SyntheticSpec(**{**TINY_SPEC, "num_test": 10000})
    with pytest.raises(ValueError, match="size=33"):
        SyntheticSpec(**{**TINY_SPEC, "size": 33})


def test_video_processors_shapes_order_and_seeded_crop():
    frames = torch.randint(0, 255, (4, 3, 40, 48), dtype=torch.uint8)
    ev = VideoEvalProcessor(num_frames=4, image_size=32)
    out = ev(frames)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    rev = VideoEvalProcessor(num_frames=4, image_size=32, frame_order="reverse")(frames)
    assert torch.equal(rev, out.flip(0))
    shuf = VideoEvalProcessor(num_frames=4, image_size=32, frame_order="shuffle")
    assert torch.equal(shuf(frames, seed=1), shuf(frames, seed=1))
    assert not torch.equal(shuf(frames, seed=1), out)
    tr = VideoTrainProcessor(num_frames=4, image_size=32, min_scale=0.3)
    assert torch.equal(tr(frames, seed=3), tr(frames, seed=3))
    assert not torch.equal(tr(frames, seed=3), tr(frames, seed=4))


def test_caption_processor_and_word_tokenizer(tmp_path):
    proc = CaptionProcessor(max_words=5)  # LAVIS's pre_caption: commas, hyphens and apostrophes stay
    assert proc("A Red, circle-moves LEFT! on black.") == "a red, circle-moves left on"
    assert CaptionProcessor()("  A man's (big)  dog:   runs.\n") == "a man's big dog runs"
    tok = WordTokenizer.train(["a red circle", "a blue square, left"])
    assert tok.ids("square, left") == tok.ids("square , left") and tok.unk_token_id not in tok.ids("square, left")
    ids, mask = tok(["a red square", "a green circle"], max_length=8)
    assert ids.shape == mask.shape == (2, 5)
    assert ids[0, 0] == tok.bos_token_id and ids[0, 4] == tok.eos_token_id
    assert ids[1, 2] == tok.unk_token_id
    assert tok.decode(ids[0]) == "a red square"
    tok.save(tmp_path / "t.json")
    assert WordTokenizer.load(tmp_path / "t.json").ids("blue circle") == tok.ids("blue circle")


def test_attribute_accuracy_checks_each_attribute_exactly():
    attrs = {"a": {"colour": "red", "shape": "circle", "direction": "left", "size": "small", "background": "black"}}
    assert attribute_accuracy({"a": "a tiny red circle moves to the left on a black background"}, attrs) == {
        "attr_colour": 100.0, "attr_shape": 100.0, "attr_size": 100.0, "attr_direction": 100.0,
        "attr_background": 100.0, "attr_direction_sign": 100.0}
    got = attribute_accuracy({"a": "a big red circle moves right and left on gray"}, attrs)
    assert got["attr_colour"] == 100.0 and got["attr_size"] == 0.0
    assert got["attr_direction"] == 0.0  # naming both directions is not right
    assert got["attr_background"] == 0.0 and got["attr_shape"] == 100.0
    assert got["attr_direction_sign"] == 0.0  # no caption named one direction on the axis

    # the sign counts only captions on the right axis: b (right for left) counts, c (up for left) does not
    attrs = {k: {**attrs["a"]} for k in "abcd"}
    got = attribute_accuracy({"a": "moves left", "b": "moves rightward", "c": "moves up", "d": "goes to the left"}, attrs)
    assert got["attr_direction"] == 50.0 and got["attr_direction_sign"] == 100.0 * 2 / 3


def test_decoded_frame_cache_gives_the_same_items(tiny_data):
    from vcap.datasets.datasets.base import CaptionTrainDataset, load_annotations

    records = load_annotations(tiny_data / "annotations" / "train.json")
    args = (records, tiny_data / "videos", VideoTrainProcessor(num_frames=4, image_size=32),
            CaptionProcessor())
    plain, cached = CaptionTrainDataset(*args, seed=5), CaptionTrainDataset(*args, seed=5, cache_decoded=True)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in (0, 7, 7, 30):
            a, b = plain[i], cached[i]
            assert torch.equal(a["video"], b["video"]) and a["text_input"] == b["text_input"]
    assert len(cached.cache) == 3  # items 0, 7 and 30 come from three different videos
