"""Optimizer parameter groups and per-step learning-rate schedules."""
from __future__ import annotations

import math

import torch

from vcap.common.registry import registry


def param_groups(model: torch.nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms and other 1-d parameters.

    ``lr_scales`` maps a parameter-name prefix to a multiplier of the base LR (e.g. CLIP4Clip's
    ``coef_lr`` for the pretrained CLIP weights); the first matching prefix wins.
    """
    lr_scales = lr_scales or {}
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not name.endswith(".bias")
        scale = next((s for prefix, s in lr_scales.items() if name.startswith(prefix)), 1.0)
        groups.setdefault((decay, scale), []).append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (decay, scale), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]


class _TimmSchedule:
    """A timm scheduler (``timm.scheduler``) run per optimizer step on the schedule's shape (base 1.0), so that each
    parameter group keeps its ``lr_scale``: group lr = ``init_lr * lr_scale * factor``, warm-up from
    ``warmup_lr`` and the floor ``min_lr`` scaled alike. (timm's own ``warmup_lr_init`` and ``lr_min`` are absolute:
    run on the groups themselves, a CLIP4Clip group at ``coef_lr`` 1e-3 would warm down and end above its base.)"""

    def __init__(self, optimizer, total_steps: int, init_lr: float, min_lr: float = 0.0,
                 warmup_steps: int = 0, warmup_lr: float = 0.0, steps_per_epoch: int | None = None):
        self.optimizer, self.init_lr = optimizer, init_lr
        self.steps_per_epoch = steps_per_epoch
        self.total_steps, self.warmup_steps = max(1, int(total_steps)), int(warmup_steps)
        self._shape_param = torch.nn.Parameter(torch.zeros(1))
        self._shape = torch.optim.SGD([self._shape_param], lr=1.0)
        rel = (lambda v: v / init_lr) if init_lr else (lambda v: 0.0)
        self.timm = self.make(self._shape, rel(min_lr), rel(warmup_lr))
        self.step_num = 0
        self._apply()

    def make(self, shape_optimizer, min_factor: float, warmup_factor: float):
        raise NotImplementedError

    def factor_at(self, step: int) -> float:
        self.timm.step_update(step)
        return self._shape.param_groups[0]["lr"]

    def lr_at(self, step: int) -> float:
        return self.init_lr * self.factor_at(step)

    def _apply(self) -> None:
        lr = self.lr_at(self.step_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_num += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_num": self.step_num}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step_num"])
        self._apply()


@registry.register_lr_scheduler("linear_warmup_cosine")
class LinearWarmupCosineLR(_TimmSchedule):
    """Linear warm-up from ``warmup_lr`` to ``init_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``
    at the last step: timm's ``CosineLRScheduler`` (``warmup_prefix``, per update)."""

    def make(self, shape_optimizer, min_factor: float, warmup_factor: float):
        from timm.scheduler import CosineLRScheduler

        return CosineLRScheduler(shape_optimizer, t_initial=max(1, self.total_steps - self.warmup_steps),
                                 lr_min=min_factor, warmup_t=self.warmup_steps, warmup_lr_init=warmup_factor,
                                 warmup_prefix=True, t_in_epochs=False)


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LavisLinearWarmupCosineLR(_TimmSchedule):
    """LAVIS's ``linear_warmup_cosine_lr`` (lavis/common/optims.py) as its runners step it, for recipes copied from
    LAVIS yamls: in the first epoch only, a linear warm-up from ``warmup_lr`` towards ``init_lr`` over
    ``warmup_steps``; from the second epoch on, one cosine value per epoch, ``min_lr + (init_lr - min_lr) * (1 +
    cos(pi * epoch / max_epoch)) / 2``. An epoch is ``steps_per_epoch`` steps (an inner epoch under runner_iter),
    and the warm-up is cut off where the first epoch ends: seed 003's 500-step inner epochs with 1000 warm-up steps
    reach half of ``init_lr``, then jump to the cosine. vcap's ``linear_warmup_cosine`` decays every step instead."""

    def make(self, shape_optimizer, min_factor: float, warmup_factor: float):
        self.min_factor, self.warmup_factor = min_factor, warmup_factor
        return None

    def factor_at(self, step: int) -> float:
        per_epoch = max(1, self.steps_per_epoch or self.total_steps)
        epoch, i = divmod(step, per_epoch)
        if epoch == 0:
            return min(1.0, self.warmup_factor + (1.0 - self.warmup_factor) * i / max(self.warmup_steps, 1))
        max_epoch = max(1, self.total_steps // per_epoch)
        return (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + self.min_factor


@registry.register_lr_scheduler("constant")
class ConstantLR(_TimmSchedule):
    """Linear warm-up, then ``init_lr`` throughout: timm's ``StepLRScheduler`` with a decay rate of 1."""

    def make(self, shape_optimizer, min_factor: float, warmup_factor: float):
        from timm.scheduler import StepLRScheduler

        return StepLRScheduler(shape_optimizer, decay_t=self.total_steps + 1, decay_rate=1.0,
                               warmup_t=self.warmup_steps, warmup_lr_init=warmup_factor, t_in_epochs=False)
