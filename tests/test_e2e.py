"""End to end: real torchrun with 2 gloo processes on a few generated videos, then evaluate.py."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY_SPEC

SMALL = [f"datasets.{{ds}}.build_info.{k}={v}" for k, v in TINY_SPEC.items()]


def env(tmp_path):
    return {**os.environ, "VCAP_DATA_ROOT": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(cmd, tmp_path, timeout=300):
    p = subprocess.run(cmd, cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def torchrun(script, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            script, *args]


CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (.ci/run installs it)


def check_report_in_chromium(page, rows: int) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            raise AssertionError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium for the report test")
        pytest.skip(f"no {CHROMIUM} here (apt-get install chromium); CI runs this check")
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page()
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page.resolve().as_uri())
        tab.wait_for_load_state("load")
        n_rows = tab.evaluate("document.querySelectorAll('#rows tbody tr').length")
        images = tab.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        tab.fill("#filter", "zzz-no-such-text")
        filtered = tab.evaluate("document.querySelectorAll('#rows tbody tr').length")
        browser.close()
    assert not errors, errors
    assert n_rows == rows, (n_rows, rows)
    assert images and all(done and width > 0 for _, done, width in images), [i for i in images if not i[2]][:5]
    assert filtered == 0


def options(ds, out, *extra):
    return ["--options", *[o.format(ds=ds) for o in SMALL], f"run.output_dir={out}", "run.max_epoch=2",
            "run.batch_size_train=8", "run.batch_size_eval=5", "run.warmup_steps=2", *extra]


@pytest.mark.parametrize("project,ds,monitor,keys", [
    pytest.param("projects/demo/caption_synthetic.yaml", "synthetic_caption", "CIDEr",
                 {"Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"}, marks=pytest.mark.slow),  # 130 s
    ("projects/demo/retrieval_synthetic.yaml", "synthetic_retrieval", "t2v_R1",
     {"t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR", "v2t_R1", "v2t_MnR"}),
])
def test_torchrun_train_then_evaluate_from_checkpoint(project, ds, monitor, keys, tmp_path):
    out = tmp_path / "run"
    p = run(torchrun("train.py", "--cfg-path", project, *options(ds, out)), tmp_path)
    assert "PTBTokenizer" not in p.stdout + p.stderr and "early_stopping" not in p.stdout + p.stderr

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) >= keys and set(metrics["val"]) >= keys
    assert metrics["steps"] == 2 * (TINY_SPEC["num_train"] * TINY_SPEC["captions_per_video"] // 16)
    assert isinstance(metrics["test"][monitor], float)
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.run.output_dir == str(out) and saved.datasets[ds].build_info.seed == TINY_SPEC["seed"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows) and any(f"val/{monitor}" in r for r in rows)
    assert list((out / "tensorboard").iterdir())
    results = json.loads((out / "results" / "test.json").read_text())
    n_test = TINY_SPEC["num_test"] * (1 if ds == "synthetic_caption" else TINY_SPEC["captions_per_video"])
    assert len(results) == n_test  # every test item exactly once across the two ranks
    # the run's HTML report, opened in a real headless Chromium: no console errors, a row per test item, every
    # thumbnail decoded (retrieval: each query's top 5 and its right video)
    page = out / "report" / "index.html"
    assert page.is_file()
    check_report_in_chromium(page, n_test)
    again = run([sys.executable, "-m", "vcap.cli", "report", str(out), "--split", "test"], tmp_path).stdout
    assert again.strip().endswith("report/index.html") and sorted((out / "report").glob("curve_*.png"))

    ckpt = out / "checkpoints" / "best.safetensors"
    assert ckpt.is_file() and (out / "checkpoints" / "last.safetensors").is_file()
    # evaluate.py rebuilds model (and tokenizer) from the checkpoint and recomputes the test metrics
    p = run(torchrun("evaluate.py", "--cfg-path", project, *options(ds, out, f"model.checkpoint={ckpt}")), tmp_path)
    again = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert again["test"] == metrics["test"]
    assert len(re.findall(rf"^test\s+{monitor}\s+\d", p.stdout, re.M)) == 1  # one table, printed by rank 0
    if ds != "synthetic_caption":
        # vcap retrieve: embed a folder once (cached), then answer queries with the top-k videos
        videos = next((tmp_path / "data" / "synthetic").glob("*/videos"))
        cmd = [sys.executable, "-m", "vcap.cli", "retrieve", "--cfg-path", project, "--videos", str(videos), "-k", "3",
               "--query", "a red circle moves left", "a blue square", "--cache", str(tmp_path / "cache"),
               "--options", *[o.format(ds=ds) for o in SMALL], f"model.checkpoint={ckpt}"]
        first = run(cmd, tmp_path).stdout
        n_videos = sum(TINY_SPEC[f"num_{s}"] for s in ("train", "val", "test"))
        assert f"{n_videos} videos ({n_videos} embedded now" in first
        assert len(re.findall(r"^  [123]\. -?\d\.\d{4}  \w+\.mp4$", first, re.M)) == 6
        again = run(cmd, tmp_path).stdout
        assert f"{n_videos} videos (0 embedded now" in again and again.split("\n")[1:] == first.split("\n")[1:]
        # the checkpoint alone (its directory) carries the model config, tokenizer and processor
        alone = run([sys.executable, "-m", "vcap.cli", "retrieve", "--model", str(out / "checkpoints"), "--videos",
                     str(videos), "-k", "3", "--query", "a red circle moves left", "a blue square", "--cache",
                     str(tmp_path / "cache2")], tmp_path).stdout
        assert alone.split("\n")[1:] == first.split("\n")[1:]
        return
    # vcap caption: the same captions as the evaluation for the same videos (greedy, same processor)
    videos = next((tmp_path / "data" / "synthetic").glob("*/videos"))
    rows = json.loads((out / "evaluate" / "results" / "test.json").read_text())[:3]
    cmd = [sys.executable, "-m", "vcap.cli", "caption", "--cfg-path", project, "--video",
           *[str(videos / f"{r['video_id']}.mp4") for r in rows], str(tmp_path / "missing.mp4"),
           "--options", *[o.format(ds=ds) for o in SMALL], f"model.checkpoint={ckpt}"]
    p = subprocess.run(cmd, cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr[-2000:]  # an input failed: said by the status, after the others
    assert [line.split("\t")[1] for line in p.stdout.strip().splitlines()] == [r["prediction"] for r in rows]
    assert "missing.mp4\t(skipped: file does not exist)" in p.stderr
    p = subprocess.run(cmd + ["--json"], cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    listed = json.loads(p.stdout)
    assert p.returncode == 1 and [x.get("caption") for x in listed[:3]] == [r["prediction"] for r in rows]
    assert listed[3] == {"video": str(tmp_path / "missing.mp4"), "error": "file does not exist"}
    # the checkpoint alone, without the project file: the same captions
    p = run([sys.executable, "-m", "vcap.cli", "caption", "--model", str(ckpt), "--json", "--video",
             *[str(videos / f"{r['video_id']}.mp4") for r in rows]], tmp_path)
    assert [x["caption"] for x in json.loads(p.stdout)] == [r["prediction"] for r in rows]
    # every run.generate key is a flag: two beams' captions of at most 3 tokens each; settings no decoding can
    # take are refused with the reason (status 2)
    one = str(videos / f"{rows[0]['video_id']}.mp4")
    p = run([sys.executable, "-m", "vcap.cli", "caption", "--model", str(ckpt), "--json", "--video", one,
             "--num-beams", "2", "--num-captions", "2", "--max-len", "3", "--min-len", "0"], tmp_path)
    captions = json.loads(p.stdout)[0]["captions"]
    assert len(captions) == 2 and all(len(c.split()) <= 3 for c in captions)
    p = subprocess.run([sys.executable, "-m", "vcap.cli", "caption", "--model", str(ckpt), "--video", one,
                        "--num-beams", "1", "--num-captions", "3"], cwd=REPO, env=env(tmp_path), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "num_captions (3) > num_beams (1)" in p.stderr
    # and in Python, as LAVIS users do: the checkpoint's model with its processors gives the same captions
    import torch

    from vcap import load_model_and_preprocess

    alone, vis_alone, _ = load_model_and_preprocess(checkpoint=str(ckpt))  # as from_pretrained: no name needed
    clip = vis_alone["eval"](vis_alone["eval"].load(videos / f"{rows[0]['video_id']}.mp4")[0])
    assert alone.generate({"video": clip[None]}, num_beams=1, max_len=16) == [rows[0]["prediction"]]
    model, vis, txt = load_model_and_preprocess("blip2_opt", "tiny", checkpoint=str(ckpt))
    clips = torch.stack([vis["eval"](vis["eval"].load(videos / f"{r['video_id']}.mp4")[0]) for r in rows])
    assert model.generate({"video": clips}, num_beams=1, max_len=16) == [r["prediction"] for r in rows]
    assert txt["eval"]("A Cat, running!") == "a cat, running"  # LAVIS's pre_caption: the comma stays
    with pytest.raises(ValueError, match="pass checkpoint="):
        load_model_and_preprocess("blip2_opt", "tiny")

    # evaluate.py --results: the written predictions against the written COCO-style ground truth, no model
    results, gt = out / "evaluate" / "results" / "test.json", out / "evaluate" / "gt" / "test.json"
    assert json.loads(gt.read_text())["annotations"][0].keys() >= {"image_id", "caption"}
    p = run([sys.executable, "evaluate.py", "--results", str(results), "--gt", str(gt)], tmp_path)
    scored = json.loads(results.with_suffix(".metrics.json").read_text())
    assert {k: scored[k] for k in keys - {"SPICE"}} == {k: metrics["test"][k] for k in keys - {"SPICE"}}
    assert "CIDEr" in p.stdout

    # SCST from the cross-entropy checkpoint, 2 ranks: rewards are logged and the run evaluates
    scst = tmp_path / "scst"
    run(torchrun("train.py", "--cfg-path", "projects/demo/caption_synthetic_scst.yaml", *options(
        ds, scst, f"model.checkpoint={ckpt}", "run.max_epoch=1", "run.max_iters=3", "run.valid_splits=[]",
        "run.log_freq=1")), tmp_path)
    rows = [json.loads(line) for line in (scst / "log.jsonl").read_text().splitlines()]
    assert {"train/reward", "train/baseline", "train/beat_baseline"} <= set().union(*rows)
    assert json.loads((scst / "metrics.json").read_text())["steps"] == 3


def test_single_process_train_and_bad_config_rejected_before_work(tmp_path):
    out = tmp_path / "single"
    p = run([sys.executable, "train.py", "--cfg-path", "projects/demo/retrieval_synthetic.yaml",
             *options("synthetic_retrieval", out, "run.max_epoch=1", "run.valid_splits=[]", "run.accum_grad_iters=2")],
            tmp_path)
    assert re.search(r"^test\s+t2v_R1\s+\d", p.stdout, re.M)  # training ends with evaluate.py's table
    console = p.stdout + p.stderr  # not a terminal: progress lines every run.log_freq steps, no tqdm stream
    assert "\r" not in console
    assert re.search(r"epoch 0 step 1 \(batch 2 of 14\): loss \d", console)  # 15 batches, 14 make whole steps
    assert "retrieval: clip4clip/tiny on synthetic_retrieval; 1 epochs, batch 8 per rank" in console
    assert "\n  arch: clip4clip" not in console  # the whole config is in config.yaml, not on the console
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val" not in metrics and metrics["test"]["t2v_MnR"] >= 1
    batches = TINY_SPEC["num_train"] * TINY_SPEC["captions_per_video"] // 8
    assert metrics["steps"] == batches // 2  # two batches per optimizer step

    # run.evaluate_only makes train.py evaluate the given checkpoint instead of training
    again = tmp_path / "again"
    run([sys.executable, "train.py", "--cfg-path", "projects/demo/retrieval_synthetic.yaml",
         *options("synthetic_retrieval", again, "run.evaluate_only=true",
                  f"model.checkpoint={out / 'checkpoints' / 'last.safetensors'}")], tmp_path)
    assert json.loads((again / "metrics.json").read_text())["test"] == metrics["test"]
    assert not (again / "checkpoints").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: clip4clip, model_type: tiny}\ndatasets: {synthetic_retrieval: {}}\n"
                   f"run: {{task: retrieval, output_dir: {tmp_path / 'never'}, max_epochs: 2, init_lr: fast}}\n")
    fresh = tmp_path / "fresh"
    p = subprocess.run([sys.executable, "train.py", "--cfg-path", str(bad)], cwd=REPO, env=env(fresh),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "run.max_epochs: unknown key (value 2); did you mean 'max_epoch'?" in p.stderr
    assert "run.init_lr: got 'fast' (str), expected float" in p.stderr
    assert not (tmp_path / "never").exists() and not (fresh / "data").exists()


def test_torchrun_trains_from_shards_and_sees_every_item_once_per_epoch(tmp_path):
    """vcap shard writes the train split; 2 ranks stream it, each item exactly once per epoch."""
    project, ds = "projects/demo/caption_synthetic.yaml", "synthetic_caption"
    shards = tmp_path / "shards"
    small = [o.format(ds=ds) for o in SMALL]
    run([sys.executable, "-m", "vcap.cli", "shard", "--cfg-path", project, "--split", "train", "--out", str(shards),
         "--shard-size", "7", "--options", *small], tmp_path)
    index = json.loads((shards / "index.json").read_text())
    assert len(index["shards"]) == 6 and index["captions"] == 120  # 40 videos x 3 captions
    out = tmp_path / "run"
    run(torchrun("train.py", "--cfg-path", project, *options(
        ds, out, f"datasets.{ds}.train_storage=webdataset", f"datasets.{ds}.train_shards={shards / 'index.json'}",
        "run.batch_size_train=6", "run.trace_samples=true", "run.valid_splits=[]", "run.num_workers=1")), tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 * 10  # 120 items / 2 ranks / 6 per batch, two epochs
    orders = []
    for epoch in (0, 1):
        seen = [(out / "samples" / f"epoch{epoch:03d}_rank{r}.txt").read_text().split() for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == 60
        assert sorted(seen[0] + seen[1]) == sorted(f"train{v:05d}#{k}" for v in range(40) for k in range(3))
        orders.append(seen[0])
    assert orders[0] != orders[1]  # a new order each epoch
    assert isinstance(metrics["test"]["CIDEr"], float)


def test_bad_videos_are_reported_and_too_many_stop_the_run(tmp_path, tiny_data):
    """A broken file is listed in bad_samples.jsonl; past run.max_bad_sample_ratio the run stops, saying why."""
    videos = tmp_path / "videos"
    videos.mkdir()
    records = json.loads((tiny_data / "annotations" / "train.json").read_text())[:12]
    for r in records:
        (videos / r["video"]).symlink_to(tiny_data / "videos" / r["video"])
    (videos / "broken.mp4").write_bytes((tiny_data / "videos" / records[0]["video"]).read_bytes()[:300])
    rows = [{"video": r["video"], "captions": r["captions"]} for r in records] + \
        [{"video": "broken.mp4", "captions": ["a broken video"]}, {"video": "gone.mp4", "captions": ["not there"]}]
    (tmp_path / "ann.json").write_text(json.dumps(rows))
    project = OmegaConf.load(REPO / "projects/demo/retrieval_synthetic.yaml")
    project.datasets = {"custom_retrieval": {
        "build_info": {"annotations": {"train": str(tmp_path / "ann.json"), "val": None, "test": str(tmp_path / "ann.json")},
                       "videos": str(videos)},
        "vis_processor": {"train": {"image_size": 32, "num_frames": 4}, "eval": {"image_size": 32, "num_frames": 4}}}}
    path = tmp_path / "custom.yaml"
    OmegaConf.save(project, path)
    base = [f"run.output_dir={tmp_path / 'ok'}", "run.max_epoch=1", "run.batch_size_train=4", "run.valid_splits=[]"]
    p = run([sys.executable, "train.py", "--cfg-path", str(path), "--options", *base, "run.max_bad_sample_ratio=0.2"],
            tmp_path)
    # a file that does not exist is found when the dataset is built, and left out of training
    assert "datasets.custom_retrieval train: 1 of 14 videos do not exist and are left out" in p.stdout + p.stderr
    bad = [json.loads(line) for line in (tmp_path / "ok" / "bad_samples.jsonl").read_text().splitlines()]
    assert {b["path"].rsplit("/", 1)[1] for b in bad if b["split"] == "train"} == {"broken.mp4"}
    assert {b["path"].rsplit("/", 1)[1] for b in bad if b["split"] == "test"} == {"broken.mp4", "gone.mp4"}
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["test"]["num_bad_videos"] == 2 and metrics["test"]["num_videos"] == 12

    p = subprocess.run([sys.executable, "train.py", "--cfg-path", str(path), "--options", *base[1:],
                        f"run.output_dir={tmp_path / 'stop'}"], cwd=REPO, env=env(tmp_path), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode != 0
    # one broken video of 13 (counted once, whatever its caption rows), stopped after the epoch's checkpoint
    assert "1 of 13 videos (7.7%) could not be loaded (1 failed to decode), more than run.max_bad_sample_ratio=0.01" \
        in p.stderr and "broken.mp4" in p.stderr
    assert (tmp_path / "stop" / "checkpoints" / "last.safetensors").is_file()


def test_clipcap_trains_from_cached_features_without_any_video(tmp_path):
    """vcap extract-features caches the frozen CLIP's frame embeddings; training then never decodes video."""
    project, ds = "projects/demo/clipcap_synthetic.yaml", "synthetic_caption"
    small = [o.format(ds=ds) for o in SMALL]
    cache = tmp_path / "features"
    base = ["--cfg-path", project, "--options", *small, "model.freeze_clip=true", f"run.output_dir={tmp_path / 'x'}"]
    for split in ("train", "val", "test"):
        p = run([sys.executable, "-m", "vcap.cli", "extract-features", "--split", split, "--out", str(cache), *base],
                tmp_path)
        assert f"of {ds}/{split} embedded into" in p.stdout
    index = json.loads((cache / "index.json").read_text())
    assert len(index["videos"]) == sum(TINY_SPEC[f"num_{s}"] for s in ("train", "val", "test"))
    videos = next((tmp_path / "data" / "synthetic").glob("*/videos"))
    videos.rename(videos.with_name("gone"))  # from here on, any decode would fail
    out = tmp_path / "run"
    run([sys.executable, "train.py", "--cfg-path", project, "--options", *small, "model.freeze_clip=true",
         f"datasets.{ds}.features={cache}", f"run.output_dir={out}", "run.max_epoch=1", "run.batch_size_train=8",
         "run.batch_size_eval=8"], tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["num_bad_videos"] == 0 and metrics["test"]["num_videos"] == TINY_SPEC["num_test"]
    assert not (out / "bad_samples.jsonl").exists()


@pytest.mark.slow  # 100 s
def test_fsdp_trains_like_ddp_and_its_checkpoint_loads_unsharded(tmp_path):
    """run.fsdp on 2 gloo ranks: the same steps as DDP give the same weights; evaluation (generation,
    whose length differs per rank) and SCST sampling run on the sharded model; the checkpoint, written
    from the gathered full state, evaluates in one unsharded process to the same metrics."""
    from safetensors.torch import load_file

    project, ds = "projects/demo/caption_synthetic.yaml", "synthetic_caption"
    lora = ["model.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}", "model.freeze_llm=true"]
    common = ["run.max_epoch=1", "run.max_iters=4", "run.valid_splits=[]", "run.accum_grad_iters=2", *lora]
    weights = {}
    for mode in ("ddp", "fsdp"):
        run(torchrun("train.py", "--cfg-path", project, *options(ds, tmp_path / mode, *common,
                                                                 f"run.fsdp={str(mode == 'fsdp').lower()}")), tmp_path)
        weights[mode] = load_file(str(tmp_path / mode / "checkpoints" / "last.safetensors"))
    assert weights["ddp"].keys() == weights["fsdp"].keys()
    assert any("lora_B" in k for k in weights["fsdp"])
    for k, v in weights["ddp"].items():
        assert torch.allclose(v, weights["fsdp"][k], atol=2e-5, rtol=1e-4), \
            f"{k}: max |ddp - fsdp| {(v - weights['fsdp'][k]).abs().max():.3g}, max |ddp| {v.abs().max():.3g}"
    sharded = json.loads((tmp_path / "fsdp" / "metrics.json").read_text())["test"]
    again = tmp_path / "unsharded"
    run([sys.executable, "evaluate.py", "--cfg-path", project, *options(
        ds, again, *lora, f"model.checkpoint={tmp_path / 'fsdp' / 'checkpoints' / 'last.safetensors'}")], tmp_path)
    assert json.loads((again / "evaluate" / "metrics.json").read_text())["test"]["CIDEr"] == sharded["CIDEr"]

    run(torchrun("train.py", "--cfg-path", "projects/demo/caption_synthetic_scst.yaml", *options(
        ds, tmp_path / "scst", *lora, f"model.checkpoint={tmp_path / 'fsdp' / 'checkpoints' / 'last.safetensors'}",
        "run.max_epoch=1", "run.max_iters=2", "run.valid_splits=[]", "run.test_splits=[]", "run.fsdp=true",
        "run.log_freq=1")), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "scst" / "log.jsonl").read_text().splitlines()]
    assert "train/reward" in set().union(*rows)


def test_cache_vit_features_needs_repeating_clips_and_then_hits(tmp_path):
    project, ds = "projects/demo/caption_synthetic.yaml", "synthetic_caption"
    base = ["run.max_epoch=2", "run.valid_splits=[]", "run.test_splits=[]", "run.cache_vit_features=true",
            "model.freeze_vit=true"]
    p = subprocess.run([sys.executable, "train.py", "--cfg-path", project, *options(ds, tmp_path / "refused", *base)],
                       cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "vcap: invalid config" in p.stderr  # refused by build_config, before any data
    assert "run.cache_vit_features: datasets.synthetic_caption.vis_processor.train is video_train with sampling " \
           "'rand' and a random crop" in p.stderr and not (tmp_path / "refused").exists()
    ok = tmp_path / "cached"
    p = run([sys.executable, "train.py", "--cfg-path", project, *options(
        ds, ok, *base, f"datasets.{ds}.vis_processor.train={{name: video_eval, num_frames: 4, sampling: uniform, "
                       f"image_size: 32}}")], tmp_path)
    rates = [float(x) for x in re.findall(r"ViT feature cache \(rank 0\): \d+ clips, [\d.]+ GB, hit rate ([\d.]+)%",
                                          p.stderr + p.stdout)]
    # epoch 0: each video's 3 captions share its clip (40 videos, 120 items); epoch 1: every clip is cached
    assert len(rates) == 2 and rates[0] == pytest.approx(100 * 80 / 120, abs=0.05) and rates[1] == 100.0
