"""SCST: rewards against all references, the leave-one-out baseline, and gradients through score_sequences."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_models import CAPTIONS, build, samples

from vcap.evaluation.cider import CiderD
from vcap.project import build_config
from vcap.tasks.scst import SCSTTask, leave_one_out_baseline


def test_leave_one_out_advantages_of_each_video_sum_to_zero():
    rewards = torch.tensor([[1.0, 2.0, 0.5, 0.0, 3.0], [0.2, 0.2, 0.2, 0.2, 0.9]])
    baseline = leave_one_out_baseline(rewards)
    assert baseline[0, 0] == pytest.approx((2.0 + 0.5 + 0.0 + 3.0) / 4)
    assert torch.allclose((rewards - baseline).sum(1), torch.zeros(2), atol=1e-6)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        leave_one_out_baseline(rewards[:, :1])


def _task(**scst):
    cfg = build_config(OmegaConf.create({
        "model": {"arch": "blip2_opt", "model_type": "tiny"}, "datasets": {"synthetic_caption": {}},
        "run": {"task": "captioning_scst", "output_dir": "o", "generate": {"num_beams": 1, "max_len": 8},
                "scst": scst}}))
    task = SCSTTask(cfg)
    task.cider = CiderD({"v0": [CAPTIONS[0], "a red circle moves left"], "v1": [CAPTIONS[1]]})
    return task


@pytest.mark.parametrize("scst", [{"num_samples": 3}, {"num_samples": 2, "baseline": "greedy", "length_normalize": True},
                                  {"num_samples": 2, "sample_method": "beam"}], ids=str)
def test_scst_gradients_reach_the_trainable_parameters(word_tokenizer_path, scst, monkeypatch):
    model = build("blip2_opt", word_tokenizer_path)
    model.train()
    task = _task(**scst)
    # an untrained model's captions all score CIDEr 0 (zero advantages, zero gradients): rewards that differ
    # keep this test about the gradient path; the real CIDEr-D rewards are tested below and in test_evaluation
    monkeypatch.setattr(task.cider, "score", lambda caps, vids: np.arange(len(caps), dtype=float) * (len(caps) > 2))
    batch = {**samples(), "video_id": ["v0", "v1"]}
    torch.manual_seed(0)
    out = task.train_step(model, batch)
    assert model.training  # sampling ran in eval mode and the model is back in training mode
    assert torch.isfinite(out["loss"]) and 0 <= float(out["beat_baseline"]) <= 1
    out["loss"].backward()
    grads = [p.grad.abs().sum() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert grads and sum(float(g) for g in grads) > 0
    qformer = [p for n, p in model.named_parameters() if n.startswith("qformer.") and p.requires_grad]
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in qformer)


def test_scst_loss_is_minus_advantage_times_logprob(word_tokenizer_path, monkeypatch):
    model = build("blip2_opt", word_tokenizer_path).eval()  # no dropout: both passes give the same log-probs
    task = _task(num_samples=2)
    ids = torch.tensor([[5, 6, 3, 0], [5, 3, 0, 0], [7, 3, 0, 0], [7, 8, 9, 3]])
    monkeypatch.setattr(task, "_draw", lambda m, s: (ids, None))
    monkeypatch.setattr(task.cider, "score", lambda caps, vids: torch.tensor([1.0, 0.0, 0.5, 0.5]).numpy())
    batch = {**samples(), "video_id": ["v0", "v1"]}
    out = task.train_step(model, batch)
    logp = model.score_sequences(batch, ids).view(2, 2)
    adv = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    assert float(out["loss"].detach()) == pytest.approx(float(-(adv * logp).mean().detach()), rel=1e-5)
    assert float(out["reward"]) == pytest.approx(0.5) and float(out["beat_baseline"]) == pytest.approx(0.25)
    # seed 003's baseline: the mean of all K rewards, the sample's own included (half the advantage for K = 2), and
    # its loss on length-normalised log-probabilities (each sequence up to and including its end token, 3)
    task = _task(num_samples=2, baseline="mean", length_normalize=True)
    monkeypatch.setattr(task, "_draw", lambda m, s: (ids, None))
    monkeypatch.setattr(task.cider, "score", lambda caps, vids: torch.tensor([1.0, 0.0, 0.5, 0.5]).numpy())
    out = task.train_step(model, batch)
    lengths = torch.tensor([[3.0, 2.0], [2.0, 4.0]])
    assert float(out["baseline"]) == pytest.approx(0.5)
    assert float(out["loss"].detach()) == pytest.approx(float(-(adv / 2 * logp / lengths).mean().detach()), rel=1e-5)


def test_scst_rewards_use_every_reference_of_the_video(word_tokenizer_path, monkeypatch):
    model = build("blip2_opt", word_tokenizer_path)
    task = _task(num_samples=2)
    tok = model.tokenizer
    second_ref = tok(["a red circle moves left"], 16, add_bos=False)[0]
    ids = torch.cat([second_ref, second_ref, second_ref, second_ref])
    monkeypatch.setattr(task, "_draw", lambda m, s: (ids, None))
    out = task.train_step(model, {**samples(), "video_id": ["v0", "v1"]})
    rewards = task.cider.score(["a red circle moves left"] * 2, ["v0", "v1"])
    assert float(out["reward"]) == pytest.approx(rewards.mean(), rel=1e-6)
    # the caption is v0's second reference: scoring against the first reference only (seed 003) misses it
    first_only = CiderD({"v0": [CAPTIONS[0]], "v1": [CAPTIONS[1]]}).score(["a red circle moves left"], ["v0"])
    assert rewards[0] > first_only[0] and rewards[0] > rewards[1]


@pytest.mark.parametrize("method", ["sample", "beam"])
def test_scst_trains_the_xclip_lstm_decoder(word_tokenizer_path, method, monkeypatch):
    """The shared SCST task drives any Captioner: here the LSTM decoder (sampling and beams carry its state)."""
    model = build("xclip_lstm", word_tokenizer_path)
    model.train()
    task = _task(num_samples=3, sample_method=method)
    monkeypatch.setattr(task.cider, "score", lambda caps, vids: np.arange(len(caps), dtype=float))
    out = task.train_step(model, {**samples(), "video_id": ["v0", "v1"]})
    out["loss"].backward()
    assert float(model.lstm.weight_hh_l0.grad.abs().sum()) > 0 and float(model.head.weight.grad.abs().sum()) > 0
