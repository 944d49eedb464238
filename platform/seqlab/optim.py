"""AdamW with the paper's parameter groups and a linear warmup / linear decay schedule."""
from __future__ import annotations

import torch

from seqlab.config import OptimConfig


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); never biases or norm weights.

    Biases and norm gains are exactly the parameters with fewer than two dimensions, which keeps the rule
    correct for any architecture without a list of module types.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of cfg.lr at `step`: 0 -> 1 over warmup, then linearly down to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr / cfg.lr
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return floor + (1.0 - floor) * (1.0 - progress)


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, max_steps: int):
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=tuple(cfg.betas), eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, max_steps))
    return optimizer, scheduler
