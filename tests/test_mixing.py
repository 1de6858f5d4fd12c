"""Seed 003's data recipe: datasets mixed by ratio (run.train_dataset_ratios, LAVIS's MultiIterLoader), web video
read as video2dataset writes it, MSR-VTT from its official files; 2-process torchrun runs, one killed and resumed."""
import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from omegaconf import OmegaConf
from test_e2e import env, run, torchrun
from test_resume import final_weights, kill_all, latest_step

from vcap.datasets.loaders import mix_choices
from vcap.processors.text_processors import CaptionProcessor


def test_draws_follow_the_ratios_and_are_a_function_of_seed_and_epoch():
    shares = np.bincount(mix_choices([1, 3], seed=42, epoch=0, n=10_000), minlength=2) / 10_000
    assert abs(shares[0] - 0.25) < 0.02 and abs(shares[1] - 0.75) < 0.02, shares
    shares = np.bincount(mix_choices([1, 7], seed=0, epoch=5, n=10_000), minlength=2) / 10_000
    assert abs(shares[0] - 0.125) < 0.02, shares
    assert np.array_equal(mix_choices([1, 3], 42, 3, 500), mix_choices([1, 3], 42, 3, 500))
    assert not np.array_equal(mix_choices([1, 3], 42, 3, 500), mix_choices([1, 3], 42, 4, 500))


# -- data in the layouts users have ------------------------------------------------------------------
def msrvtt_raw(tiny_data, raw):
    """MSR-VTT's official files (train_val_videodatainfo.json + test_videodatainfo.json) over the tiny videos."""
    split_name = {"train": "train", "val": "validate", "test": "test"}
    info = {"train_val_videodatainfo.json": {"videos": [], "sentences": []},
            "test_videodatainfo.json": {"videos": [], "sentences": []}}
    n = 0
    for split in ("train", "val", "test"):
        for r in json.loads((tiny_data / "annotations" / f"{split}.json").read_text()):
            vid = f"video{n}"
            (raw / "TrainValVideo").mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_data / "videos" / r["video"], raw / "TrainValVideo" / f"{vid}.mp4")
            target = info["test_videodatainfo.json" if split == "test" else "train_val_videodatainfo.json"]
            target["videos"].append({"category": 0, "url": "u", "video_id": vid, "start time": 0.0, "end time": 1.0,
                                     "split": split_name[split], "id": n})
            target["sentences"] += [{"caption": c, "video_id": vid, "sen_id": 10 * n + k}
                                    for k, c in enumerate(r["captions"])]
            n += 1
    for name, data in info.items():
        (raw / name).write_text(json.dumps({"info": {"year": 2016}, **data}))


def video2dataset_shards(tiny_data, out, per_shard=12):
    """What `video2dataset --input_format csv --output_format webdataset --save_additional_columns
    '[videoid,page_idx,page_dir,duration]'` writes for WebVid: NNNNN.tar holding <key>.mp4, <key>.txt and
    <key>.json (key = shard * 10^4 + index, 9 digits), and NNNNN_stats.json with the shard's successes."""
    import webdataset as wds

    out.mkdir(parents=True)
    records = json.loads((tiny_data / "annotations" / "train.json").read_text())
    for shard, start in enumerate(range(0, len(records), per_shard)):
        chunk = records[start:start + per_shard]
        with wds.TarWriter(str(out / f"{shard:05d}.tar")) as sink:
            for i, r in enumerate(chunk):
                key = f"{shard * 10**4 + i:09d}"
                meta = {"url": f"https://ak.picdn.net/shutterstock/videos/{9000 + start + i}/preview/stock.mp4",
                        "caption": r["captions"][0], "videoid": str(9000 + start + i), "page_idx": 1,
                        "page_dir": "001_050", "duration": "PT00H00M01S", "key": key, "status": "success",
                        "error_message": None, "yt_meta_dict": None}
                sink.write({"__key__": key, "mp4": (tiny_data / "videos" / r["video"]).read_bytes(),
                            "txt": r["captions"][0], "json": json.dumps(meta, indent=4)})
        (out / f"{shard:05d}_stats.json").write_text(json.dumps({
            "count": len(chunk), "successes": len(chunk), "failed_to_download": 0, "failed_to_subsample": 0,
            "duration": 1.0, "bytes_downloaded": 0, "start_time": 0.0, "end_time": 1.0,
            "status_dict": {"success": len(chunk)}}, indent=4))
    return out


SMALL_VIS = {"train": {"num_frames": 4, "image_size": 32, "sampling": "rand"},
             "eval": {"num_frames": 4, "image_size": 32}}


def project(tmp_path, shards, ratios: dict, iters: int) -> str:
    cfg = {"model": {"arch": "blip2_opt", "model_type": "tiny"},
           "datasets": {"msrvtt_caption": {"vis_processor": SMALL_VIS},
                        "webvid_caption": {"train_storage": "webdataset", "train_shards": str(shards),
                                           "vis_processor": SMALL_VIS}},
           "run": {"task": "captioning", "runner": "runner_iter", "train_dataset_ratios": ratios,
                   "iters_per_inner_epoch": iters, "output_dir": str(tmp_path / "unused"), "batch_size_train": 4,
                   "batch_size_eval": 8, "init_lr": 1e-3, "warmup_steps": 2, "generate": {"num_beams": 1, "max_len": 8},
                   "trace_samples": True, "monitor": "CIDEr"}}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def mixed_data(tiny_data, tmp_path):
    from vcap.datasets.prepare import prepare

    msrvtt_raw(tiny_data, tmp_path / "raw_msrvtt")
    prepare("msrvtt", tmp_path / "raw_msrvtt", tmp_path / "data" / "msrvtt")
    return video2dataset_shards(tiny_data, tmp_path / "webvid_shards")


def trace(out, epoch: int, rank: int) -> list[str]:
    return (out / "samples" / f"epoch{epoch:03d}_rank{rank}.txt").read_text().splitlines()


def test_config_errors_name_the_dataset_and_the_weight(tmp_path, mixed_data):
    from vcap.common.validation import ConfigError
    from vcap.project import build_config

    base = OmegaConf.load(project(tmp_path, mixed_data, {"msrvtt_caption": 1, "webvid_caption": 7}, 5))
    for change, message in [
        ({"train_dataset_ratios": {"msrvtt_caption": 1, "webvid": 7}},
         "run.train_dataset_ratios.webvid: no such dataset in this project"),
        ({"train_dataset_ratios": {"msrvtt_caption": 1, "webvid_caption": 0}},
         "run.train_dataset_ratios.webvid_caption: got 0, expected a positive number"),
        ({"train_dataset_ratios": {"msrvtt_caption": 1}},
         "run.train_dataset_ratios: datasets.webvid_caption has a train split but no weight"),
        ({"iters_per_inner_epoch": None}, "run.iters_per_inner_epoch: got None"),
    ]:
        cfg = base.copy()
        for key, value in change.items():  # replaced, not merged
            cfg.run[key] = value
        with pytest.raises(ConfigError, match=message):
            build_config(cfg)
    cfg = OmegaConf.merge(base, {"datasets": {"msrvtt_caption": {"build_info": {"annotations": {"train": None}}}}})
    with pytest.raises(ConfigError, match="run.train_dataset_ratios.msrvtt_caption: datasets.msrvtt_caption has no train"):
        build_config(cfg)


def test_torchrun_mixes_msrvtt_files_and_video2dataset_shards_then_evaluates_on_msrvtt(tmp_path, mixed_data):
    """1 : 7, 2 processes, 2 inner epochs of 6 steps, validation after each; every step's batches come from the
    dataset the (seed, epoch) draw names, on both ranks; the test split is MSR-VTT's."""
    out = tmp_path / "run"
    cfg = project(tmp_path, mixed_data, {"msrvtt_caption": 1, "webvid_caption": 7}, 6)
    run(torchrun("train.py", "--cfg-path", cfg, "--options", f"run.output_dir={out}", "run.max_epoch=2"), tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["msrvtt_caption/test"]["num_videos"] == 16  # MSR-VTT's test split
    assert "CIDEr" in metrics["val"] and "webvid_caption/test" not in metrics
    counts = {"msrvtt_caption": 0, "webvid_caption": 0}
    for epoch in range(2):
        want = mix_choices([1, 7], 42, epoch, 6)
        for rank in range(2):
            lines = trace(out, epoch, rank)
            assert len(lines) == 6 * 4
            got = [line.split("\t")[0] for line in lines[::4]]
            assert got == [["msrvtt_caption", "webvid_caption"][d] for d in want]
            for line in lines:
                counts[line.split("\t")[0]] += 1
    print("items per dataset over 2 ranks x 12 steps:", counts)
    assert counts["webvid_caption"] > counts["msrvtt_caption"]


def test_killed_mid_inner_epoch_resumes_to_bit_identical_weights(tmp_path, mixed_data):
    """1 : 3, 2 inner epochs of 5 steps; killed once mid inner epoch (at its second checkpoint), then resumed."""
    cfg = project(tmp_path, mixed_data, {"msrvtt_caption": 1, "webvid_caption": 3}, 5)
    common = ["run.max_epoch=2", "run.checkpoint_every_iters=1", "run.valid_splits=[]", "run.test_splits=[]",
              "model.freeze_vit=false"]
    straight = tmp_path / "straight"
    run(torchrun("train.py", "--cfg-path", cfg, "--options", f"run.output_dir={straight}", *common), tmp_path)
    out = tmp_path / "killed"
    cmd = torchrun("train.py", "--cfg-path", cfg, "--options", f"run.output_dir={out}", *common)
    p = subprocess.Popen(cmd, cwd=REPO, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 240
    while latest_step(out) < 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    kill_all(p)
    p.wait()
    killed_at = latest_step(out)
    assert 0 < killed_at < 10 and killed_at % 5 != 0, killed_at  # inside an inner epoch
    run(cmd, tmp_path)
    print("killed after step", killed_at)
    want, got = final_weights(straight), final_weights(out)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])][:5]
    for epoch in range(2):  # the resumed run saw the same items (its trace holds the replayed tail twice at most)
        for rank in range(2):
            assert set(trace(out, epoch, rank)) <= set(trace(straight, epoch, rank))


def test_video2dataset_shards_stream_with_their_captions_and_a_bad_video_is_reported(tiny_data, tmp_path):
    from vcap.datasets.shards import ShardTrainDataset
    from vcap.processors import build_processor

    shards = video2dataset_shards(tiny_data, tmp_path / "shards", per_shard=16)
    tar = shards / "00001.tar"  # one sample's video replaced by bytes that do not decode
    import tarfile

    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tar, "w") as t:
        for m, data in members:
            if m.name == "000010003.mp4":
                data = b"not a video"
                m.size = len(data)
            t.addfile(m, __import__("io").BytesIO(data))
    vis = build_processor(OmegaConf.create({"name": "video_eval", "num_frames": 4, "image_size": 32}))
    ds = ShardTrainDataset(shards, vis, build_processor(OmegaConf.create({"name": "caption"})), seed=0)
    assert ds.index["videos"] == 40 and len(ds.captions()) == 40
    train = {r["captions"][0] for r in json.loads((tiny_data / "annotations" / "train.json").read_text())}
    ds.batch_size = 8
    batches = list(ds)
    assert len(batches) == 5 and all(b["video"].shape[0] == 8 for b in batches)
    assert all(t in {CaptionProcessor()(c) for c in train} for b in batches for t in b["text_input"])
    assert all(v.isdigit() and int(v) >= 9000 for b in batches for v in b["video_id"])  # WebVid's videoid
    bad = [x for b in batches for x in b["bad_samples"]]
    assert len(bad) == 1 and bad[0]["video_id"] == "9019"
