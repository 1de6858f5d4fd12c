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


class _StepScheduler:
    """Sets every group's lr from a function of the global step (``lr_scale`` applied per group)."""

    def __init__(self, optimizer, total_steps: int, init_lr: float, min_lr: float = 0.0,
                 warmup_steps: int = 0, warmup_lr: float = 0.0):
        self.optimizer = optimizer
        self.total_steps = max(1, int(total_steps))
        self.init_lr, self.min_lr = init_lr, min_lr
        self.warmup_steps, self.warmup_lr = int(warmup_steps), warmup_lr
        self.step_num = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def _warmup(self, step: int) -> float | None:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * (step + 1) / self.warmup_steps
        return None

    def _apply(self) -> None:
        lr = self.lr_at(self.step_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_num += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_num": self.step_num}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step_num"])
        self._apply()


@registry.register_lr_scheduler("linear_warmup_cosine")
class LinearWarmupCosineLR(_StepScheduler):
    """Linear warm-up to ``init_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``."""

    def lr_at(self, step: int) -> float:
        warm = self._warmup(step)
        if warm is not None:
            return warm
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.init_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


@registry.register_lr_scheduler("constant")
class ConstantLR(_StepScheduler):
    """Linear warm-up, then ``init_lr`` throughout."""

    def lr_at(self, step: int) -> float:
        warm = self._warmup(step)
        return self.init_lr if warm is None else warm
