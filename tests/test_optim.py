import math

import pytest
import torch

from vcap.common.optim import LinearWarmupCosineLR, param_groups


def test_no_weight_decay_on_biases_and_norms_and_lr_scales():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].requires_grad_(False)
    groups = param_groups(model, 0.05, lr_scales={"1.": 0.1})
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model[0].weight)]["weight_decay"] == 0.05
    assert by_id[id(model[0].bias)]["weight_decay"] == 0.0
    assert by_id[id(model[1].weight)]["weight_decay"] == 0.0 and by_id[id(model[1].weight)]["lr_scale"] == 0.1
    assert id(model[2].weight) not in by_id  # frozen parameters are not optimised


def test_linear_warmup_then_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 0.5}], lr=1.0)
    sched = LinearWarmupCosineLR(opt, total_steps=110, init_lr=1e-3, min_lr=1e-5, warmup_steps=10)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"] / 0.5)
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    state = sched.state_dict()
    other = LinearWarmupCosineLR(opt, total_steps=110, init_lr=1e-3, min_lr=1e-5, warmup_steps=10)
    other.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.lr_at(110) * 0.5)
