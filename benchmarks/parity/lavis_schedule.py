"""LAVIS's ``linear_warmup_cosine_lr`` against vcap's scheduler of that name: LAVIS 1.0.2's own
``LinearWarmupCosineLRScheduler``, stepped as its runners step it (``step(cur_epoch, cur_step)`` before every
iteration; under runner_iter ``cur_epoch`` is the inner epoch and ``max_epoch`` is max_iters / iters_per_inner_epoch),
for seed 003's schedules, in LAVIS's venv. The learning rates go to tests/fixtures/lavis_schedule.json, which
tests/test_optim.py compares vcap's with.

    python benchmarks/parity/lavis_schedule.py --lavis-python /work/lavis/venv/bin/python [--write-fixture]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lavis_schedule.json"
# seed 003's train yamls: (max_iters or max_epoch * iters per epoch, iters per (inner) epoch, lrs, warm-up)
CASES = {
    "caption_msrvtt_flant5xl_ft": dict(total=15000, per_epoch=500, init_lr=5e-5, min_lr=1e-5, warmup_lr=1e-8,
                                       warmup_steps=1000),
    "caption_msrvtt_flant5xl_scst": dict(total=20000, per_epoch=1000, init_lr=1e-5, min_lr=1e-6, warmup_lr=1e-8,
                                         warmup_steps=1000),
    "caption_msrvtt_opt2.7b_ft (30 epochs of 1600 steps)": dict(total=48000, per_epoch=1600, init_lr=1e-6, min_lr=0.0,
                                                               warmup_lr=1e-8, warmup_steps=1000),
}
STEPS = [0, 1, 2, 100, 499, 500, 501, 999, 1000, 1599, 1600, 1601, 5000, 7499, 7500, 14999, 19999, 47999]

SIDE = """
import json, sys, torch
from lavis.common.optims import LinearWarmupCosineLRScheduler
cases, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name, c in cases.items():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=c["init_lr"])
    sched = LinearWarmupCosineLRScheduler(opt, max_epoch=c["total"] // c["per_epoch"], min_lr=c["min_lr"],
                                          init_lr=c["init_lr"], warmup_steps=c["warmup_steps"],
                                          warmup_start_lr=c["warmup_lr"])
    rows = {}
    for step in steps:
        if step < c["total"]:
            sched.step(cur_epoch=step // c["per_epoch"], cur_step=step % c["per_epoch"])
            rows[step] = opt.param_groups[0]["lr"]
    out[name] = rows
print(json.dumps(out))
"""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lavis-python", required=True)
    ap.add_argument("--write-fixture", action="store_true")
    args = ap.parse_args(argv)
    done = subprocess.run([args.lavis_python, "-c", SIDE, json.dumps(CASES), json.dumps(STEPS)], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    lavis = json.loads(done.stdout.strip().splitlines()[-1])
    import torch

    from vcap.common.optim import LavisLinearWarmupCosineLR

    worst = 0.0
    for name, c in CASES.items():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=c["init_lr"])
        ours = LavisLinearWarmupCosineLR(opt, total_steps=c["total"], init_lr=c["init_lr"], min_lr=c["min_lr"],
                                         warmup_steps=c["warmup_steps"], warmup_lr=c["warmup_lr"],
                                         steps_per_epoch=c["per_epoch"])
        for step, lr in lavis[name].items():
            worst = max(worst, abs(ours.lr_at(int(step)) - lr) / max(lr, 1e-12))
        print(f"{name}: {len(lavis[name])} steps, largest relative difference so far {worst:.1e}")
    if args.write_fixture:
        FIXTURE.write_text(json.dumps({"source": "benchmarks/parity/lavis_schedule.py: LAVIS 1.0.2's "
                                                 "LinearWarmupCosineLRScheduler", "cases": CASES, "lavis": lavis},
                                      indent=1))
        print(f"wrote {FIXTURE}")
    return {"max_relative_difference": worst}


if __name__ == "__main__":
    main()
