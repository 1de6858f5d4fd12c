"""Converters on small fixture files in the official formats, and the builders reading their output."""
import json
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vcap.common.registry import registry
from vcap.datasets.prepare import prepare
from vcap.processors.video_io import write_video
from vcap.project import build_config


def _video(path, seconds=2, fps=4, size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = seconds * fps
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i, :, (i * 3) % size] = 255
    write_video(path, frames, fps)


def _builder(name, annotations: dict, videos, card_type="default", **extra):
    """A builder for ``name`` whose card points at test files, through the real config layering."""
    annotations = {"train": None, "val": None, "test": None, **annotations}  # splits not given are off
    project = {"model": {"arch": "clip4clip", "model_type": "tiny"},
               "datasets": {name: {"type": card_type, "build_info": {"annotations": annotations, "videos": str(videos)},
                                   **extra}},
               "run": {"task": "retrieval", "output_dir": "unused"}}
    cfg = build_config(OmegaConf.create(project))
    return registry.get_builder_class(name)(cfg.datasets[name], name)


def _small_processors():
    return {"vis_processor": {"train": {"image_size": 32, "num_frames": 4}, "eval": {"image_size": 32, "num_frames": 4}}}


def test_msrvtt_caption_and_retrieval_splits(tmp_path):
    raw = tmp_path / "raw"
    split_of = {**{f"video{i}": "train" for i in range(6)}, "video6": "validate", "video7": "validate",
                "video8": "test", "video9": "test"}
    for vid in split_of:
        if vid != "video5":  # one video is missing
            _video(raw / ("TestVideo" if split_of[vid] == "test" else "TrainValVideo") / f"{vid}.mp4")
    for name, wanted in (("train_val_videodatainfo.json", ("train", "validate")), ("test_videodatainfo.json", ("test",))):
        vids = [v for v, s in split_of.items() if s in wanted]
        (raw / name).write_text(json.dumps({
            "info": {"year": 2016},
            "videos": [{"category": 1, "url": "u", "video_id": v, "start time": 1.0, "end time": 9.0, "split": split_of[v],
                        "id": int(v[5:])} for v in vids],
            "sentences": [{"caption": f"clip {v} number {k}", "video_id": v, "sen_id": 2 * int(v[5:]) + k}
                          for v in vids for k in range(2)]}))
    (raw / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"video{i}\n" for i in range(8)))
    (raw / "MSRVTT_train.7k.csv").write_text("video_id\n" + "".join(f"video{i}\n" for i in range(4)))
    (raw / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr8,video8,a man sings\nret1,msr9,video9,a dog runs\n")
    out = tmp_path / "msrvtt"
    summary = prepare("msrvtt", raw, out)
    splits = summary["splits"]
    assert splits["caption_train"] == {"videos": 5, "captions": 10, "missing_videos": 1}
    assert splits["caption_val"]["videos"] == 2 and splits["caption_test"]["videos"] == 2
    assert splits["retrieval_train_9k"]["videos"] == 7 and splits["retrieval_train_7k"]["videos"] == 4
    assert splits["retrieval_test_1ka"] == {"videos": 2, "captions": 2, "missing_videos": 0}
    assert (out / "missing_videos.txt").read_text().split("\n")[0] == "caption_train\tvideo5"
    test = json.loads((out / "annotations" / "retrieval_test_1ka.json").read_text())
    assert test[0] == {"video_id": "video8", "video": "TestVideo/video8.mp4", "captions": ["a man sings"]}
    assert (out / "videos").resolve() == raw.resolve()

    ann = {s: str(out / "annotations" / f"caption_{s}.json") for s in ("train", "val", "test")}
    ds = _builder("msrvtt_caption", ann, out / "videos", **_small_processors()).build_datasets()
    assert len(ds["train"]) == 10 and len(ds["test"]) == 2
    item = ds["train"][3]
    assert item["video"].shape == (4, 3, 32, 32) and item["text_input"].startswith("clip video")
    assert ds["test"].references["video9"] == ["clip video9 number 0", "clip video9 number 1"]
    ret = {"train": str(out / "annotations" / "retrieval_train_7k.json"),
           "test": str(out / "annotations" / "retrieval_test_1ka.json")}
    rds = _builder("msrvtt_retrieval", ret, out / "videos", card_type="7k", **_small_processors()).build_datasets()
    assert rds["test"].texts == ["a man sings", "a dog runs"] and rds["test"].text_to_video == [0, 1]
    one = _builder("msrvtt_caption", ann, out / "videos", train_captions="one", **_small_processors()).build_datasets()
    assert len(one["train"]) == 5


def test_msvd_from_the_captions_pickle_and_lists(tmp_path):
    raw = tmp_path / "raw"
    ids = {"train": ["-4wsuPCjDBc_5_15", "abc_1_3"], "val": ["val_0_1"], "test": ["tst_2_9"]}
    captions = {v: [["a", "man", "is", "cooking"], ["someone", "cooks", str(n)]]
                for n, v in enumerate(sum(ids.values(), []))}
    (raw / "msvd_data").mkdir(parents=True)
    (raw / "msvd_data" / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    for split, vids in ids.items():
        (raw / "msvd_data" / f"{split}_list.txt").write_text("\n".join(vids) + "\n")
        for v in vids:
            _video(raw / "YouTubeClips" / f"{v}.avi")
    summary = prepare("msvd", raw, tmp_path / "msvd")
    assert summary["splits"]["caption_train"] == {"videos": 2, "captions": 4, "missing_videos": 0}
    recs = json.loads((tmp_path / "msvd" / "annotations" / "caption_train.json").read_text())
    assert recs[0]["captions"] == ["a man is cooking", "someone cooks 0"]
    assert recs[0]["video"] == "YouTubeClips/-4wsuPCjDBc_5_15.avi"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (raw / "msvd_data" / "raw-captions.pkl").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        prepare("msvd", raw, tmp_path / "msvd2")


def test_vatex_clips_and_segments_of_full_videos(tmp_path):
    raw = tmp_path / "raw"
    _video(raw / "clips" / "Ptf_2VRj-V0_000001_000002.mp4")  # a pre-cut clip
    _video(raw / "full" / "a_b_c.mp4", seconds=4)  # a full video, cut by start/end (an id with underscores)
    train = [{"videoID": "Ptf_2VRj-V0_000001_000002", "enCap": ["A person dances.", "Someone dances."], "chCap": ["x"]},
             {"videoID": "a_b_c_000002_000003", "enCap": ["A clip of a full video."], "chCap": ["y"]},
             {"videoID": "gone_000000_000010", "enCap": ["Missing."], "chCap": ["z"]}]
    (raw / "vatex_training_v1.0.json").write_text(json.dumps(train))
    (raw / "vatex_validation_v1.0.json").write_text(json.dumps(train[:1]))
    summary = prepare("vatex", raw, tmp_path / "vatex")
    assert summary["splits"]["caption_train"] == {"videos": 2, "captions": 3, "missing_videos": 1}
    recs = json.loads((tmp_path / "vatex" / "annotations" / "caption_train.json").read_text())
    assert recs[1] == {"video_id": "a_b_c_000002_000003", "video": "full/a_b_c.mp4",
                       "captions": ["A clip of a full video."], "start": 2.0, "end": 3.0}
    ann = {"train": str(tmp_path / "vatex" / "annotations" / "caption_train.json")}
    ds = _builder("vatex_caption", ann, tmp_path / "vatex" / "videos", **_small_processors()).build_datasets()
    item = ds["train"][2]  # the segment 2-3 s of a 4 s video at 4 fps: frames 8..12
    assert item["video"].shape == (4, 3, 32, 32) and item["video_mask"].all()
    # no test file: the test split is the validation set, and the summary says so
    assert summary["splits"]["caption_test"]["videos"] == 1 and "validation" in summary["notes"]["caption_test"]


@pytest.mark.parametrize("test_file", ["vatex_public_test_english_v1.1.json", "cap_private_test.json"])
def test_vatex_test_split_is_the_test_file_when_given(tmp_path, test_file):
    """VATEX's public test (its own schema) or LAVIS's cap_private_test.json (rows of video and caption, stored by
    LAVIS as cap_test.json: what seed 003's VATEX numbers used) becomes caption_test, which the card tests on."""
    raw = tmp_path / "raw"
    for vid in ("Ptf_2VRj-V0_000001_000002", "test_clip_000003_000013"):
        _video(raw / "clips" / f"{vid}.mp4")
    train = [{"videoID": "Ptf_2VRj-V0_000001_000002", "enCap": ["A person dances."]}]
    (raw / "vatex_training_v1.0.json").write_text(json.dumps(train))
    (raw / "vatex_validation_v1.0.json").write_text(json.dumps(train))
    if test_file.startswith("vatex"):
        rows = [{"videoID": "test_clip_000003_000013", "enCap": ["A test clip.", "Another caption."]}]
    else:  # LAVIS's evaluation layout, as test_lavis_files_as_they_are has it: a row per video, its captions listed
        rows = [{"video": "test_clip_000003_000013.mp4", "caption": ["A test clip.", "Another caption."],
                 "image_id": "test_clip_000003_000013"}]
    (raw / test_file).write_text(json.dumps(rows))
    summary = prepare("vatex", raw, tmp_path / "vatex")
    assert summary["notes"]["caption_test"] == f"from {test_file}"
    recs = json.loads((tmp_path / "vatex" / "annotations" / "caption_test.json").read_text())
    assert len(recs) == 1 and recs[0]["video"] == "clips/test_clip_000003_000013.mp4"
    assert recs[0]["captions"] == ["A test clip.", "Another caption."]
    from vcap.project import build_config

    cfg = build_config(OmegaConf.create({"model": {"arch": "blip2_t5", "model_type": "tiny"},
                                         "datasets": {"vatex_caption": {}}, "run": {"task": "captioning",
                                                                                     "output_dir": "o"}}))
    assert cfg.datasets.vatex_caption.build_info.annotations.test.endswith("vatex/annotations/caption_test.json")


def test_coco_karpathy_images_as_one_frame_videos(tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    images = []
    for n, (folder, split) in enumerate([("train2014", "train"), ("val2014", "restval"), ("val2014", "val"),
                                         ("val2014", "test")]):
        name = f"COCO_{folder}_{n:012d}.jpg"
        (raw / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 40, 3), 40 * n, np.uint8)).save(raw / folder / name)
        images.append({"filepath": folder, "filename": name, "imgid": n, "split": split, "cocoid": 100 + n,
                       "sentences": [{"raw": f"A picture {n}.", "tokens": ["a", "picture"], "imgid": n, "sentid": n}],
                       "sentids": [n]})
    (raw / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    summary = prepare("coco", raw, tmp_path / "coco")
    assert summary["splits"]["caption_train"]["videos"] == 2  # restval joins train
    ann = {s: str(tmp_path / "coco" / "annotations" / f"caption_{s}.json") for s in ("train", "test")}
    ds = _builder("coco_caption", ann, tmp_path / "coco" / "videos",
                  vis_processor={"eval": {"num_frames": 1}}).build_datasets()
    item = ds["test"][0]  # the frame size follows the model's (the tiny CLIP4Clip's 32 px)
    assert item["video"].shape == (1, 3, 32, 32) and item["video_id"] == "103"


def test_lavis_files_as_they_are_and_custom_csv(tmp_path):
    raw = tmp_path / "raw"
    for v in ("video0", "video1"):
        _video(raw / "videos" / f"{v}.mp4")
    (raw / "cap_train.json").write_text(json.dumps(
        [{"video": "video0.mp4", "caption": "a first", "image_id": 0}, {"video": "video0.mp4", "caption": "a second"},
         {"video": "video1.mp4", "caption": "a third"}]))
    (raw / "cap_test.json").write_text(json.dumps([{"video": "video1.mp4", "caption": ["x one", "x two"]}]))
    summary = prepare("lavis", raw, tmp_path / "lavis")  # written under the names the cards read
    assert summary["splits"]["caption_train"] == {"videos": 2, "captions": 3, "missing_videos": 0}
    assert summary["splits"]["caption_test"] == {"videos": 1, "captions": 2, "missing_videos": 0}

    (tmp_path / "mine.csv").write_text("video,caption,start,end\nvideos/video0.mp4,a cat,0,1\n"
                                       "videos/video0.mp4,a kitten,0,1\nvideos/video1.mp4,a dog,,\n")
    ds = _builder("custom_retrieval", {"train": str(tmp_path / "mine.csv"), "test": str(tmp_path / "mine.csv")}, raw,
                  **_small_processors()).build_datasets()
    assert ds["test"].texts == ["a cat", "a kitten", "a dog"] and ds["test"].text_to_video == [0, 0, 1]
    assert ds["test"].records[0]["start"] == 0.0 and ds["test"].records[1]["video_id"] == "video1"
    (tmp_path / "bad.jsonl").write_text('{"video": "videos/video0.mp4", "text": "a cat"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: no 'caption' or 'captions' column; found the columns "
                                         r"\['text', 'video'\]"):
        _builder("custom_caption", {"train": str(tmp_path / "bad.jsonl")}, raw).build_datasets()
    (tmp_path / "empty.csv").write_text("video,caption\nvideos/video0.mp4,a cat\nvideos/video1.mp4,\n")
    with pytest.raises(ValueError, match=r"empty.csv: line 3 \(videos/video1.mp4\): the caption is empty"):
        _builder("custom_caption", {"train": str(tmp_path / "empty.csv")}, raw).build_datasets()
    with pytest.raises(FileNotFoundError, match=r"datasets.custom_caption.build_info.annotations.train: "
                                                r".*nowhere.csv does not exist; set it to your CSV"):
        _builder("custom_caption", {"train": str(tmp_path / "nowhere.csv")}, raw).build_datasets()


def test_bad_video_in_evaluation_is_marked_not_replaced(tmp_path):
    _video(tmp_path / "v" / "good.mp4")
    (tmp_path / "v" / "bad.mp4").write_text("not a video")
    (tmp_path / "a.json").write_text(json.dumps([{"video": "good.mp4", "caption": "ok"}, {"video": "bad.mp4", "caption": "no"}]))
    ds = _builder("custom_caption", {"train": str(tmp_path / "a.json"), "test": str(tmp_path / "a.json")},
                  tmp_path / "v", **_small_processors()).build_datasets()
    bad = ds["test"][1]
    assert bad["valid"] is False and bad["video_id"] == "bad" and not bad["video_mask"].any()
    assert bad["bad_samples"][0]["path"].endswith("bad.mp4")
    train = ds["train"][1]  # training substitutes the next video and says so
    assert train["video_id"] == "good" and len(train["bad_samples"]) == 1


# -- the files as users have them (issue 18, part B) -------------------------------------------------
def _msrvtt_info(vids: dict) -> dict:
    """MSR-VTT's videodatainfo schema (train_val_videodatainfo.json / CLIP4Clip's MSRVTT_data.json)."""
    return {"info": {"year": 2016},
            "videos": [{"category": 1, "url": "u", "video_id": v, "start time": 1.0, "end time": 9.0, "split": s,
                        "id": int(v[5:])} for v, s in vids.items()],
            "sentences": [{"caption": f"clip {v} number {k}", "video_id": v, "sen_id": 2 * int(v[5:]) + k}
                          for v in vids for k in range(2)]}


def test_msrvtt_from_clip4clip_zip_with_an_excel_resaved_jsfusion_csv(tmp_path, capsys):
    """CLIP4Clip's msrvtt_data.zip: MSRVTT_data.json (all videos, split per video) and the CSVs; JSFusion's test
    CSV as Excel re-saves it (';', CRLF, a byte-order mark, no final newline)."""
    raw = tmp_path / "raw"
    split_of = {"video0": "train", "video1": "train", "video2": "validate", "video3": "test", "video4": "test"}
    for vid in split_of:
        _video(raw / "videos" / f"{vid}.mp4")
    (raw / "MSRVTT_data.json").write_text(json.dumps(_msrvtt_info(split_of)))
    (raw / "MSRVTT_train.9k.csv").write_text("video_id\r\nvideo0\r\nvideo1\r\nvideo2")
    (raw / "MSRVTT_JSFUSION_test.csv").write_bytes(
        "\ufeffkey;vid_key;video_id;sentence\r\nret0;msr3;video3;a man sings\r\nret1;msr4;video4;a dog, running".encode())
    out = tmp_path / "data" / "msrvtt"
    summary = prepare("msrvtt", raw, out)
    assert {k: v["videos"] for k, v in summary["splits"].items()} == {
        "caption_train": 2, "caption_val": 1, "caption_test": 2, "retrieval_train_9k": 3, "retrieval_test_1ka": 2}
    test = json.loads((out / "annotations" / "retrieval_test_1ka.json").read_text())
    assert [r["captions"] for r in test] == [["a man sings"], ["a dog, running"]]
    printed = capsys.readouterr().out
    assert "retrieval_test_1ka.json <- datasets.msrvtt_retrieval.build_info.annotations.val" in printed
    assert "caption_train.json <- datasets.msrvtt_caption.build_info.annotations.train" in printed

    (raw / "MSRVTT_JSFUSION_test.csv").write_text("key;vid_key;video;sentence\nret0;msr3;video3;a man sings\n")
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test.csv: expected the columns \['video_id', 'sentence'\], "
                                         r"found \['key', 'vid_key', 'video', 'sentence'\]"):
        prepare("msrvtt", raw, out)


def test_missing_annotation_files_are_reported_before_the_video_folder_is_scanned(tmp_path, monkeypatch):
    from vcap.datasets.prepare import common

    (tmp_path / "raw").mkdir()
    scanned = []
    monkeypatch.setattr(common.VideoIndex, "__init__", lambda self, *a, **k: scanned.append(a))
    for name in ("msrvtt", "msvd", "vatex", "coco"):
        with pytest.raises(FileNotFoundError):
            prepare(name, tmp_path / "raw", tmp_path / "out")
    assert scanned == []


def test_lavis_and_hugging_face_files_are_read_back_by_the_default_cards(tmp_path, monkeypatch):
    """``vcap prepare lavis`` then the default msrvtt cards, as the README says: LAVIS's cap_*.json and
    retrieval_*.json, and the Hugging Face MSR-VTT's test_1k.json rows."""
    raw = tmp_path / "raw"
    for i in range(4):
        _video(raw / "videos" / f"video{i}.mp4")
    (raw / "cap_train.json").write_text(json.dumps(
        [{"video": f"video{i}.mp4", "caption": f"a clip {i} {k}", "image_id": f"video{i}"} for i in range(2) for k in range(2)]))
    (raw / "cap_val.json").write_text(json.dumps([{"video": "video2.mp4", "caption": ["x one", "x two"], "image_id": "video2"}]))
    (raw / "cap_test.json").write_text(json.dumps([{"video": "video3.mp4", "caption": ["y one"], "image_id": "video3"}]))
    (raw / "retrieval_train.json").write_text(json.dumps(
        [{"video": f"video{i}.mp4", "caption": f"a clip {i}", "image_id": f"video{i}"} for i in range(2)]))
    (raw / "hf").mkdir()
    (raw / "hf" / "test_1k.json").write_text(json.dumps(  # friedrichor/MSR-VTT's rows
        [{"video_id": f"video{i}", "video": f"video{i}.mp4", "caption": f"clip {i} in the test", "sen_id": 100 + i,
          "category": 3, "url": "https://www.youtube.com/watch?v=x", "start time": 1.5, "end time": 11.5,
          "split": "test", "id": 7000 + i} for i in (2, 3)]))
    prepare("lavis", raw, tmp_path / "data" / "msrvtt")
    monkeypatch.setenv("VCAP_DATA_ROOT", str(tmp_path / "data"))
    project = {"model": {"arch": "clip4clip", "model_type": "tiny"},
               "datasets": {"msrvtt_caption": _small_processors(), "msrvtt_retrieval": _small_processors()},
               "run": {"task": "retrieval", "output_dir": "unused"}}
    cfg = build_config(OmegaConf.create(project))
    caption = registry.get_builder_class("msrvtt_caption")(cfg.datasets.msrvtt_caption, "msrvtt_caption").build_datasets()
    assert {s: len(d) for s, d in caption.items()} == {"train": 4, "val": 1, "test": 1}  # train: one item per caption
    retrieval = registry.get_builder_class("msrvtt_retrieval")(cfg.datasets.msrvtt_retrieval,
                                                               "msrvtt_retrieval").build_datasets()
    assert retrieval["test"].texts == ["clip 2 in the test", "clip 3 in the test"]
    assert [r["video_id"] for r in retrieval["test"].records] == ["video2", "video3"]


def test_webvid_csv_and_lavis_json_with_missing_videos_accounted(tmp_path):
    """WebVid's results_2M_train.csv (videoid, contentUrl, duration, page_dir, name; files at
    <page_dir>/<videoid>.mp4) and seed 003's LAVIS JSON (webvid2m_synthetic_msrvtt.json)."""
    raw, videos = tmp_path / "raw", tmp_path / "webvid"
    for vid in ("31353427", "14781349"):
        _video(videos / "001_050" / f"{vid}.mp4")
    raw.mkdir()
    (raw / "results_2M_train.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "31353427,https://ak.picdn.net/shutterstock/videos/31353427/preview/stock-footage-merida.mp4,PT00H00M15S,"
        "001_050,\"Merida, mexico - may 23, 2017: tourists are walking near a church\"\n"
        "14781349,https://ak.picdn.net/shutterstock/videos/14781349/preview/stock-footage-family.mp4,PT00H00M20S,"
        "001_050,Happy family using laptop on bed at home\n"
        "99999999,https://ak.picdn.net/shutterstock/videos/99999999/preview/gone.mp4,PT00H00M09S,001_050,gone\n")
    summary = prepare("webvid", raw, tmp_path / "out", videos=videos)
    assert summary["splits"]["caption_train"] == {"videos": 2, "captions": 2, "missing_videos": 1}
    records = json.loads((tmp_path / "out" / "annotations" / "caption_train.json").read_text())
    assert records[0] == {"video_id": "31353427", "video": "001_050/31353427.mp4",
                          "captions": ["Merida, mexico - may 23, 2017: tourists are walking near a church"]}
    assert (tmp_path / "out" / "missing_videos.txt").read_text() == "caption_train\t99999999\n"

    (raw / "results_2M_train.csv").unlink()
    (raw / "webvid2m_synthetic_msrvtt.json").write_text(json.dumps(
        [{"video": "31353427.mp4", "caption": "a group of tourists walk past a church"},
         {"video": "14781349.mp4", "caption": "a family looks at a laptop on a bed"}]))
    summary = prepare("webvid", raw, tmp_path / "out2", videos=videos)
    assert summary["splits"] == {"caption_train": {"videos": 2, "captions": 2, "missing_videos": 0}}

    # a CSV and a JSON that both say train would be one file: refused before anything is written
    (raw / "results_2M_train.csv").write_text("videoid,contentUrl,duration,page_dir,name\n"
                                              "31353427,u,PT00H00M15S,001_050,a church\n")
    with pytest.raises(ValueError, match="would both be written as caption_train.json"):
        prepare("webvid", raw, tmp_path / "out3", videos=videos)
    assert not (tmp_path / "out3" / "annotations").exists()
