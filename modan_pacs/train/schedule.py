"""Optimisers and learning-rate schedules: linear warm-up, then step or cosine, updated every iteration."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch
from torch import nn

from .config import OptimizerConfig, ScheduleConfig


def build_optimizer(params: list[nn.Parameter] | object, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (paper: lr 0.05, momentum 0.9, wd 1e-4) or Adam / AdamW (supervised baseline)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor_fn(cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """Multiplier of ``base_lr`` after ``step`` optimiser steps (for ``LambdaLR``).

    Warm-up: linear from ``warmup_start_lr`` to ``base_lr`` over ``warmup_epochs`` epochs; then
    ``step``: times ``gamma`` after each epoch in ``milestones``; ``cosine``: half cosine from
    ``base_lr`` to ``min_lr`` at the last step; ``constant``: 1.
    """
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    total_steps = max(1, epochs * steps_per_epoch)
    start = min(cfg.warmup_start_lr / base_lr, 1.0)
    milestones = sorted(cfg.milestones)
    min_factor = cfg.min_lr / base_lr

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start + (1.0 - start) * step / warmup_steps
        if cfg.name == "step":
            epoch = step // steps_per_epoch
            return cfg.gamma ** bisect.bisect_right(milestones, epoch)
        if cfg.name == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per iteration (its state dict holds only numbers)."""
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(cfg, base_lr, steps_per_epoch, epochs))
