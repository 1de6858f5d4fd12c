"""End to end: real torchrun with 2 gloo processes on a few generated videos, then evaluate.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def options(ds, out, *extra):
    return ["--options", *[o.format(ds=ds) for o in SMALL], f"run.output_dir={out}", "run.max_epoch=2",
            "run.batch_size_train=8", "run.batch_size_eval=5", "run.warmup_steps=2", *extra]


@pytest.mark.parametrize("project,ds,monitor,keys", [
    ("projects/demo/caption_synthetic.yaml", "synthetic_caption", "CIDEr",
     {"Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"}),
    ("projects/demo/retrieval_synthetic.yaml", "synthetic_retrieval", "t2v_R1",
     {"t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR", "v2t_R1", "v2t_MnR"}),
])
def test_torchrun_train_then_evaluate_from_checkpoint(project, ds, monitor, keys, tmp_path):
    out = tmp_path / "run"
    run(torchrun("train.py", "--cfg-path", project, *options(ds, out)), tmp_path)

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

    ckpt = out / "checkpoints" / "best.safetensors"
    assert ckpt.is_file() and (out / "checkpoints" / "last.safetensors").is_file()
    # evaluate.py rebuilds model (and tokenizer) from the checkpoint and recomputes the test metrics
    run(torchrun("evaluate.py", "--cfg-path", project, *options(ds, out, f"model.checkpoint={ckpt}")), tmp_path)
    again = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert again["test"] == metrics["test"]


def test_single_process_train_and_bad_config_rejected_before_work(tmp_path):
    out = tmp_path / "single"
    run([sys.executable, "train.py", "--cfg-path", "projects/demo/retrieval_synthetic.yaml",
         *options("synthetic_retrieval", out, "run.max_epoch=1", "run.valid_splits=[]", "run.accum_grad_iters=2")],
        tmp_path)
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
