"""Epoch plan and learning-rate schedule shared by mCL-LC's pre-training and fine-tuning.

Every epoch's randomness (order, augmentation, dropout, MINE pairing) is seeded from ``(seed, epoch)``
(:func:`eo_models.training.epoch_seed`), and the schedule is a closed-form cosine, so on the CPU a run
resumed from its checkpoint gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

__all__ = ["cosine_schedule", "epoch_order", "restore_optimisation", "steps_per_epoch"]


def steps_per_epoch(num_patches: int, batch_size: int, cap: int | None) -> int:
    """Full batches only (BatchNorm and NT-Xent want full batches); at least one, of all patches."""
    steps = max(1, num_patches // batch_size)
    return steps if cap is None else max(1, min(steps, cap))


def epoch_order(num_patches: int, steps: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """The ``steps`` batches of one epoch: consecutive slices of a seeded permutation of the patches."""
    order = torch.randperm(num_patches, generator=generator)
    return [order[step * batch_size : (step + 1) * batch_size].tolist() for step in range(steps)]


def _cosine_factor(step: int, total_steps: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to 0 over ``total_steps`` updates (the paper's "cosine decay schedule").

    Closed form (not CosineAnnealingLR's recursive one), so that a resumed run with more epochs
    continues on its own, longer schedule instead of one derived from the last stored rate.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine_factor(step, total_steps))


def restore_optimisation(
    extra: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    total_steps: int,
) -> int:
    """Load a checkpoint's optimiser and scheduler state; returns the number of finished epochs."""
    # A copy: the optimiser updates its state in place and must not change the caller's checkpoint.
    optimizer.load_state_dict(copy.deepcopy(extra["optimizer_state"]))
    scheduler.load_state_dict(extra["scheduler_state"])
    factor = _cosine_factor(scheduler.last_epoch, total_steps)
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base_lr * factor
    return int(extra["epoch"])
