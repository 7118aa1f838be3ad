"""Epoch plan and learning-rate schedule shared by mCL-LC's pre-training and fine-tuning.

Every epoch's randomness (order, augmentation, dropout, MINE pairing) is seeded from ``(seed, epoch)``
(:func:`eo_models.training.epoch_seed`), and the schedule is a closed-form cosine, so on the CPU a run
resumed from its checkpoint gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch

from eo_models.mcl_lc.params import FinetuneParams, PretrainParams
from eo_models.training import cpu_tree, epoch_seed

__all__ = ["SeededEpochs", "cosine_schedule", "epoch_order", "restore_optimisation", "steps_per_epoch"]


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


class SeededEpochs:
    """What pre-training and fine-tuning steps share (:class:`eo_models.training.TrainingSteps`).

    Full batches of at most ``params.batch_size`` patches, ``params.max_steps_per_epoch`` of them at
    most; Adam over ``parameters`` with the cosine schedule over all planned updates; and each epoch's
    batches from a permutation seeded by ``(params.seed, epoch)``.

    Args:
        num_patches: Patches of the source.
        parameters: What the optimiser updates (parameters, or Adam's parameter groups).
        params: The pre-training or fine-tuning settings.
        in_channels: Bands per patch.
        device: Where the batches go.
    """

    updates_per_step = 1

    def __init__(
        self,
        num_patches: int,
        parameters: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
        *,
        params: PretrainParams | FinetuneParams,
        in_channels: int,
        device: torch.device,
    ) -> None:
        self.num_patches, self.params, self.in_channels, self.device = (
            num_patches,
            params,
            in_channels,
            device,
        )
        self.batch_size = min(params.batch_size, num_patches)
        self.steps = steps_per_epoch(num_patches, self.batch_size, params.max_steps_per_epoch)
        self.optimizer = torch.optim.Adam(
            parameters, lr=params.learning_rate, weight_decay=params.weight_decay
        )
        self.scheduler = cosine_schedule(self.optimizer, self.total_steps)
        self.generator = torch.Generator()

    @property
    def total_steps(self) -> int:
        """Updates of the whole run, ``params.epochs`` epochs."""
        return self.params.epochs * self.steps

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Seed the epoch (dropout through torch's global generator, the rest through ``generator``)."""
        seed = epoch_seed(self.params.seed, epoch)
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        return epoch_order(self.num_patches, self.steps, self.batch_size, self.generator)

    def optimisation_state(self) -> dict[str, Any]:
        """The optimiser's (CPU tensors) and the scheduler's state, for a checkpoint's ``extra``."""
        return {
            "optimizer_state": cpu_tree(self.optimizer.state_dict()),
            "scheduler_state": self.scheduler.state_dict(),
        }
