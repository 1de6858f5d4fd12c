"""Training that survives being killed: SIGKILL at random steps of a 2-process run, resumed each time,
ends with the same weights as an uninterrupted run; a kill during a checkpoint write leaves the previous
one loadable; SIGTERM saves and stops; non-finite losses are skipped; pickled code is refused."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, TINY_SPEC
from test_e2e import env, options, run, torchrun

PROJECT, DS = "projects/demo/caption_synthetic.yaml", "synthetic_caption"
# 120 items / (8 x 2 ranks) = 7 batches per epoch, 2 epochs with validation: 14 optimizer steps
COMMON = ["run.max_epoch=2", "run.test_splits=[]", "run.checkpoint_every_iters=1", "run.keep_last=3",
          "run.log_freq=1", "model.freeze_vit=false"]


def latest_step(out) -> int:
    pointer = out / "checkpoints" / "latest"
    return int(pointer.read_text().strip().split("_")[1]) if pointer.is_file() else -1


def kill_all(p) -> None:
    """SIGKILL torchrun and its workers at once (the workers run in sessions of their own: killing the
    agent's process group alone would leave them training)."""
    workers = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    for pid in [p.pid, *map(int, workers)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def final_weights(out) -> dict:
    return load_file(str(out / "checkpoints" / "last.safetensors"))


@pytest.mark.slow  # 100 s
def test_sigkill_at_random_steps_then_resume_gives_bit_identical_weights(tmp_path):
    straight = tmp_path / "straight"
    run(torchrun("train.py", "--cfg-path", PROJECT, *options(DS, straight, *COMMON)), tmp_path)
    want = final_weights(straight)
    total = json.loads((straight / "metrics.json").read_text())["steps"]
    assert total == 14

    out = tmp_path / "killed"
    rng = random.Random(int(os.environ.get("VCAP_KILL_SEED", "0")))
    kill_points = sorted(rng.sample(range(2, total - 1), 3))
    cmd = torchrun("train.py", "--cfg-path", PROJECT, *options(DS, out, *COMMON))
    killed_at = []
    for target in kill_points:
        p = subprocess.Popen(cmd, cwd=REPO, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        deadline = time.time() + 240
        while latest_step(out) < target and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        kill_all(p)  # torchrun and both workers, mid-step
        p.wait()
        killed_at.append(latest_step(out))
        assert 0 < killed_at[-1] < total, (target, killed_at)
    run(cmd, tmp_path)  # the same command resumes (run.resume: auto) and finishes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == total and metrics["val"].keys() == json.loads((straight / "metrics.json").read_text())["val"].keys()
    assert len(list((out / "checkpoints").glob("step_*"))) <= 3  # run.keep_last
    print("kill points (last complete checkpoint):", killed_at)
    got = final_weights(out)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])][:5]
    assert metrics["val"] == json.loads((straight / "metrics.json").read_text())["val"]


WRITER = """
import sys, time, torch
from pathlib import Path
from safetensors.torch import save_file
from vcap.common.train_state import write_checkpoint
def files(tmp):
    save_file({"w": torch.full((4,), float(sys.argv[2]))}, str(tmp / "model.safetensors"))
    if sys.argv[3] == "slow":
        print("writing", flush=True)
        time.sleep(60)  # killed here: model.safetensors written, state.pt not yet
    torch.save({"step": int(sys.argv[2])}, tmp / "state.pt")
write_checkpoint(Path(sys.argv[1]), int(sys.argv[2]), files)
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    from vcap.common.train_state import latest_checkpoint, read_state

    ckpt = tmp_path / "checkpoints"
    subprocess.run([sys.executable, "-c", WRITER, str(ckpt), "5", "fast"], check=True, cwd=REPO)
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(ckpt), "6", "slow"], cwd=REPO, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(ckpt.glob(".tmp_step_00000006_*"))  # the half-written one, never under its final name
    latest = latest_checkpoint(ckpt)
    assert latest.name == "step_00000005" and read_state(latest)["step"] == 5
    assert load_file(str(latest / "model.safetensors"))["w"].tolist() == [5.0] * 4
    subprocess.run([sys.executable, "-c", WRITER, str(ckpt), "7", "fast"], check=True, cwd=REPO)
    assert latest_checkpoint(ckpt).name == "step_00000007" and not list(ckpt.glob(".tmp_*"))  # debris cleared


def test_a_training_state_that_would_run_code_is_refused(tmp_path):
    from vcap.common.train_state import read_state

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "step_00000001").mkdir()
    torch.save({"step": 1, "optimizer": Payload()}, tmp_path / "step_00000001" / "state.pt")
    with pytest.raises(ValueError, match="refused to load"):
        read_state(tmp_path / "step_00000001")
    assert not (tmp_path / "pwned").exists()


def test_sigterm_saves_and_stops_then_the_run_resumes(tmp_path):
    out = tmp_path / "term"
    cmd = torchrun("train.py", "--cfg-path", PROJECT, *options(DS, out, *COMMON[:-2], "run.valid_splits=[]",
                                                               "run.checkpoint_every_iters=100"))
    p = subprocess.Popen(cmd, cwd=REPO, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while not (log.is_file() and '"train/loss"' in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    for child in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split():
        os.kill(int(child), signal.SIGTERM)  # the workers, as a scheduler preempting them would
    text, _ = p.communicate(timeout=240)
    assert p.returncode != 0
    assert "SIGTERM: stopped after global step" in text and "run.resume: auto" in text
    stopped = latest_step(out)
    assert 1 <= stopped < 14
    run(cmd, tmp_path)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 14


NAN_TRAIN = """
import os
import sys
from vcap.cli import train_main
from vcap.common.registry import registry
from vcap.models.xclip_lstm.xclip_lstm import XCLIPLSTMCaptioner

BAD = {bad}


@registry.register_model("xclip_lstm_nan")
class NaNOnRank1(XCLIPLSTMCaptioner):
    calls = 0

    def forward(self, samples):
        out = super().forward(samples)
        if self.training:
            NaNOnRank1.calls += 1
            if os.environ["RANK"] == "1" and NaNOnRank1.calls in BAD:  # rank 0's loss stays finite
                out = {{**out, "loss": out["loss"] * float("nan")}}
        return out


train_main(sys.argv[1:])
"""


def nan_run(tmp_path, name, bad, *extra):
    script = tmp_path / f"{name}.py"
    script.write_text(NAN_TRAIN.format(bad=bad))
    out = tmp_path / name
    cmd = torchrun(str(script), "--cfg-path", "projects/demo/xclip_lstm_synthetic.yaml",
                   *options(DS, out, "model.arch=xclip_lstm_nan", "run.valid_splits=[]", "run.test_splits=[]",
                            "run.accum_grad_iters=2", "run.log_freq=1", *extra))
    return out, subprocess.run(cmd, cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=300)


def test_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    # 7 batches per rank and epoch, accumulation 2: 3 optimizer steps per epoch, 6 in 2 epochs. Rank 1's
    # loss is NaN on its 3rd training batch: the window of batches 3-4 is skipped by both ranks.
    out, p = nan_run(tmp_path, "once", "{3}")
    assert p.returncode == 0, p.stderr[-3000:]
    for rank in (0, 1):  # the logs go to stdout
        assert f"[rank{rank}] WARNING vcap.runners.runner_base: non-finite loss at batch 3 (global step 1): step " \
               "skipped (1 in a row, 1 in all)" in p.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 5 and metrics["nonfinite_skipped"] == 1
    weights = final_weights(out)
    assert all(torch.isfinite(w).all() for w in weights.values())
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
              if '"train/loss"' in line]
    assert logged == [1, 2, 3, 4, 5]

    # NaN from the 3rd batch on: two skipped steps in a row stop the run with the reason
    out, p = nan_run(tmp_path, "always", "range(3, 10**6)", "run.max_nonfinite_steps=2")
    assert p.returncode != 0
    assert ("the loss was not finite in 2 optimizer steps in a row (run.max_nonfinite_steps=2), at global step 1"
            in p.stderr + p.stdout), p.stderr[-3000:]
    assert not (out / "metrics.json").exists()


def test_weight_files_get_the_usual_permissions(tmp_path):
    """0644 under the usual umask, as torch.save's files (safetensors alone writes 0600)."""
    from vcap.common.checkpoint import save_weights

    old = os.umask(0o022)
    try:
        save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
