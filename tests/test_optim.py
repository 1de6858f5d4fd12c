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
    # timm's warm-up, as LAVIS's warmup_lr_schedule: warmup_lr (0) at step 0, init_lr at warmup_steps
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[9] == pytest.approx(9e-4)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    state = sched.state_dict()
    other = LinearWarmupCosineLR(opt, total_steps=110, init_lr=1e-3, min_lr=1e-5, warmup_steps=10)
    other.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.lr_at(110) * 0.5)


def test_groups_keep_their_lr_scale_through_warmup_and_floor():
    """timm computes the schedule's shape; each group scales it, warm-up start and floor included (timm's own
    absolute warmup_lr_init / lr_min would make a 1e-3 group warm down from 1e-5 and end above its base)."""
    from vcap.common.optim import ConstantLR

    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 1.0}, {"params": [q], "lr_scale": 1e-3}], lr=1.0)
    sched = LinearWarmupCosineLR(opt, total_steps=20, init_lr=1e-3, min_lr=1e-5, warmup_steps=4, warmup_lr=1e-4)
    seen = []
    for _ in range(21):
        seen.append([g["lr"] for g in opt.param_groups])
        sched.step()
    assert all(b == pytest.approx(a * 1e-3) for a, b in seen)
    assert seen[0][1] == pytest.approx(1e-7) and seen[4][1] == pytest.approx(1e-6) and seen[20][1] == pytest.approx(1e-8)
    const = ConstantLR(opt, total_steps=20, init_lr=1e-3, warmup_steps=2, warmup_lr=0.0)
    assert [const.lr_at(s) for s in (0, 1, 2, 19)] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])


def test_lavis_linear_warmup_cosine_lr_equals_lavis_own_scheduler():
    """``lr_sched: linear_warmup_cosine_lr`` gives LAVIS 1.0.2's own scheduler's learning rates for seed 003's
    schedules (recorded by benchmarks/parity/lavis_schedule.py in LAVIS's venv): the warm-up cut off at the end of
    the first (inner) epoch, then one cosine value per epoch."""
    import json
    from pathlib import Path

    from vcap.common.optim import LavisLinearWarmupCosineLR

    ref = json.loads((Path(__file__).parent / "fixtures" / "lavis_schedule.json").read_text())
    for name, c in ref["cases"].items():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=c["init_lr"])
        ours = LavisLinearWarmupCosineLR(opt, total_steps=c["total"], init_lr=c["init_lr"], min_lr=c["min_lr"],
                                         warmup_steps=c["warmup_steps"], warmup_lr=c["warmup_lr"],
                                         steps_per_epoch=c["per_epoch"])
        for step, lr in ref["lavis"][name].items():
            assert ours.lr_at(int(step)) == pytest.approx(lr, rel=1e-9), (name, step)
    assert ref["lavis"]["caption_msrvtt_flant5xl_ft"]["499"] < 0.51 * 5e-5  # the cut-off warm-up
