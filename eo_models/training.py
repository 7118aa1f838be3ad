"""The training-loop skeleton every model family plugs its steps into.

Each family's training (the clusterer's Algorithm 1, mCL-LC's pre-training and fine-tuning) differs
only in how it builds its model and optimiser, how it orders an epoch's patches and what one step
does. Everything around that is here, once: seeding that leaves the caller's RNG state alone, batch
validation, the finite-loss check, progress reports, history, resume bookkeeping and checkpoint
assembly (the format of ``docs/interfaces.md``). It plays the part of torchgeo's ``BaseTask``
(``configure_models`` / ``training_step``) without Lightning: :func:`fit` runs a
:class:`TrainingSteps` implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from eo_models.checkpoint import FORMAT_VERSION

__all__ = [
    "PatchSource",
    "Progress",
    "TrainingSteps",
    "assemble_checkpoint",
    "check_band_statistics",
    "check_finite",
    "cpu_state",
    "cpu_tree",
    "epoch_seed",
    "fit",
    "read_batch",
    "seeded",
]


@runtime_checkable
class PatchSource(Protocol):
    """Square patches of one or more scenes, already normalised with the checkpoint's band statistics."""

    def __len__(self) -> int:
        """Number of patches."""
        ...

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Patches ``indices`` as float32 of shape (len(indices), bands, patch, patch)."""
        ...


@dataclass(frozen=True)
class Progress:
    """Reported after every step of :func:`fit`.

    Attributes:
        epoch: 1-based epoch number.
        epochs: Epochs planned for the whole run.
        step: 1-based step (batch) number within the epoch.
        steps_per_epoch: Steps in this epoch.
        metrics: The step's losses (float), named as in the checkpoint's ``history``.
        samples: Patch-updates of the step: batch size times the updates per batch (for patches/s).
    """

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    metrics: Mapping[str, float]
    samples: int = 0

    @property
    def batch(self) -> int:
        """Alias of ``step`` (the clusterer reports per batch of J updates)."""
        return self.step

    @property
    def batches_per_epoch(self) -> int:
        """Alias of ``steps_per_epoch``."""
        return self.steps_per_epoch

    def __getattr__(self, name: str) -> float:
        # progress.loss, progress.clustering_loss, ...: the metrics read as attributes.
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return float(metrics[name])
        raise AttributeError(name)


class TrainingSteps(Protocol):
    """What a family plugs into :func:`fit`: the epoch plan and one training step.

    The model and optimiser are the implementation's own (built in its constructor, inside
    :func:`seeded`); :func:`fit` only drives the loop. An implementation that updates several times per
    batch (the clusterer's J) says so in ``updates_per_step``.
    """

    updates_per_step: int

    def epoch_batches(self, epoch: int) -> Sequence[Sequence[int]]:
        """Patch indices of each batch of 0-based ``epoch``; called once at the start of the epoch."""
        ...

    def training_step(self, epoch: int, indices: Sequence[int]) -> dict[str, float]:
        """Read the batch ``indices``, update the model, return the step's metrics."""
        ...


def check_band_statistics(in_channels: int, band_mean: Sequence[float], band_std: Sequence[float]) -> None:
    """Refuse band statistics that do not fit ``in_channels`` bands or have a non-positive std.

    Raises:
        ValueError: Naming the mismatch.
    """
    if len(band_mean) != in_channels or len(band_std) != in_channels:
        raise ValueError(
            f"expected {in_channels} band means and stds, got {len(band_mean)} and {len(band_std)}"
        )
    if in_channels and min(float(s) for s in band_std) <= 0:
        raise ValueError(f"band_std values must be > 0, got {list(band_std)}")


def read_batch(
    patches: PatchSource, indices: Sequence[int], *, in_channels: int, patch_size: int
) -> torch.Tensor:
    """Read one batch and check it: float32 tensor (N, in_channels, patch_size, patch_size) on the CPU.

    Raises:
        ValueError: If the source returns another shape, or NaN/infinite values.
    """
    array = np.asarray(patches.read([int(i) for i in indices]), dtype=np.float32)
    expected = (len(indices), in_channels, patch_size, patch_size)
    if array.shape != expected:
        raise ValueError(
            f"patch source returned shape {array.shape} for {len(indices)} patches; expected {expected} "
            "(in_channels and params.patch_size must match the patch source)"
        )
    if not np.isfinite(array).all():
        raise ValueError(
            "patch source returned NaN or infinite values; fill nodata (e.g. with 0) before training"
        )
    return torch.from_numpy(array)


def check_finite(metrics: Mapping[str, float], epoch: int, step: int, *, skip: Sequence[str] = ()) -> None:
    """Raise ``FloatingPointError`` if a loss is NaN or infinite (metrics in ``skip`` may be NaN)."""
    if not all(np.isfinite(value) for key, value in metrics.items() if key not in skip):
        raise FloatingPointError(
            f"loss became non-finite in epoch {epoch}, step {step}: {dict(metrics)}; check the patch "
            "normalisation or lower the learning rate"
        )


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for 0-based ``epoch`` of a run seeded ``seed``, so a resumed run repeats its epochs exactly."""
    return (seed * 1_000_003 + epoch) % (2**63)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (CPU and ``device``'s CUDA generator) for the block, restoring the caller's state after."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def fit(
    steps: TrainingSteps,
    *,
    epochs: int,
    start_epoch: int = 0,
    stop_epoch: int | None = None,
    history: dict[str, list[float]],
    history_per: Literal["step", "epoch"],
    on_progress: Callable[[Progress], None] | None = None,
    may_be_nan: Sequence[str] = (),
) -> dict[str, list[float]]:
    """Run epochs ``start_epoch .. stop_epoch - 1`` (0-based) of a run planned for ``epochs``.

    Args:
        steps: The family's epoch plan and training step.
        epochs: Epochs planned for the whole run (reported in progress).
        start_epoch: First epoch to run (a resumed run's finished epochs).
        stop_epoch: Stop before this epoch; default ``epochs``.
        history: Metric name -> values so far (appended to in place and returned); only these metrics
            are recorded, others a step returns are only reported in progress.
        history_per: ``"step"``: one history entry per step; ``"epoch"``: the epoch's mean per metric.
        on_progress: Called after every step.
        may_be_nan: Metrics that are allowed to be NaN (e.g. a switched-off estimate).

    Returns:
        ``history``.

    Raises:
        FloatingPointError: If a step's loss is NaN or infinite.
    """
    stop = epochs if stop_epoch is None else stop_epoch
    for epoch in range(start_epoch, stop):
        batches = steps.epoch_batches(epoch)
        sums = dict.fromkeys(history, 0.0)
        for number, indices in enumerate(batches, start=1):
            metrics = steps.training_step(epoch, indices)
            check_finite(metrics, epoch + 1, number, skip=may_be_nan)
            for key, values in history.items():
                if history_per == "step":
                    values.append(metrics[key])
                else:
                    sums[key] += metrics[key]
            if on_progress is not None:
                samples = len(indices) * int(getattr(steps, "updates_per_step", 1))
                on_progress(Progress(epoch + 1, epochs, number, len(batches), metrics, samples))
        if history_per == "epoch":
            for key, value in sums.items():
                history[key].append(value / len(batches))
    return history


# No copies: the model and optimiser are local to the training function and dropped after it, so
# the checkpoint may keep their (CPU) storage; copying ~50 M parameters three times costs seconds.
def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor detached and on the CPU."""
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def cpu_tree(value: Any) -> Any:
    """Nested dicts/lists/tuples with every tensor detached and on the CPU (optimiser states)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: cpu_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_tree(item) for item in value)
    return value


def assemble_checkpoint(
    *,
    family: str,
    model_config: Mapping[str, Any],
    band_mean: Sequence[float],
    band_std: Sequence[float],
    num_classes: int,
    train_params: Mapping[str, Any],
    history: Mapping[str, list[float]],
    model: nn.Module,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint dict in the one format of ``docs/interfaces.md`` (loads with ``weights_only=True``)."""
    return {
        "format_version": FORMAT_VERSION,
        "family": family,
        "model_config": dict(model_config),
        "band_mean": [float(value) for value in band_mean],
        "band_std": [float(value) for value in band_std],
        "num_classes": int(num_classes),
        "train_params": dict(train_params),
        "history": {key: list(values) for key, values in history.items()},
        "state_dict": cpu_state(model),
        "extra": dict(extra or {}),
    }
