"""Algorithm 1 of Saha et al. (2021): self-supervised training of the clusterer on one scene.

For each of I epochs, the scene's patches are visited in batches of B, in a seeded random order
without replacement; each batch is used for J consecutive updates, each minimising the clustering loss
(Eq. 2) plus the shuffled contrastive loss (Eq. 3). The result is a checkpoint dict in the format of
``docs/interfaces.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from eo_models.clusterer.losses import clustering_loss, random_derangement, shuffled_contrastive_loss
from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.clusterer.params import ClustererTrainingParams
from eo_models.precision import Precision, autocast, prepare_model, resolve_precision, to_memory_format
from eo_models.predict import resolve_device
from eo_models.training import (
    PatchSource,
    Progress,
    assemble_checkpoint,
    check_band_statistics,
    fit,
    read_batch,
    seeded,
)

__all__ = [
    "ArrayPatchSource",
    "ClustererLosses",
    "ClustererTrainingParams",
    "PatchSource",
    "TrainingProgress",
    "batch_indices_for_epoch",
    "clusterer_training_step",
    "compute_clusterer_losses",
    "train_clusterer",
]


class ArrayPatchSource:
    """All patches of an in-memory, normalised (bands, rows, cols) array, on a regular grid.

    Patches start every ``stride`` pixels from the top-left corner; a strip narrower than a patch at
    the right or bottom edge is not covered. Meant for tests and small demos; the pipeline reads
    patches from its Zarr store instead.
    """

    def __init__(self, array: np.ndarray, patch_size: int, stride: int | None = None) -> None:
        """Index the patch grid.

        Args:
            array: Normalised pixels, shape (bands, rows, cols); stored as float32.
            patch_size: Side R' = C' of each square patch.
            stride: Step between patch origins; defaults to ``patch_size`` (non-overlapping).

        Raises:
            ValueError: If the array is not 3-D or is smaller than one patch.
        """
        if array.ndim != 3:
            raise ValueError(f"array must have shape (bands, rows, cols), got {array.shape}")
        stride = patch_size if stride is None else stride
        if patch_size < 1 or stride < 1:
            raise ValueError(f"patch_size and stride must be positive, got {patch_size} and {stride}")
        _, rows, cols = array.shape
        if rows < patch_size or cols < patch_size:
            raise ValueError(
                f"array of {rows}x{cols} pixels is smaller than one {patch_size}x{patch_size} patch"
            )
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.patch_size = patch_size
        self.origins = [
            (row, col)
            for row in range(0, rows - patch_size + 1, stride)
            for col in range(0, cols - patch_size + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.origins)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Copy out patches ``indices``; shape (len(indices), bands, patch, patch), float32."""
        size = self.patch_size
        return np.stack(
            [
                self.array[:, row : row + size, col : col + size]
                for row, col in (self.origins[i] for i in indices)
            ]
        )


TrainingProgress = Progress
"""Reported once per batch, after its J updates: ``epoch``, ``batch``, ``batches_per_epoch``, and the
metrics ``iteration`` (updates so far), ``loss`` (mean L + L' of the J updates), ``clustering_loss``
(Eq. 2) and ``contrastive_loss`` (Eq. 3)."""


@dataclass(frozen=True)
class ClustererLosses:
    """The two loss terms of one update, as tensors (before the update)."""

    clustering: Tensor
    contrastive: Tensor

    @property
    def total(self) -> Tensor:
        """L + L', the quantity that is minimised."""
        return self.clustering + self.contrastive


def compute_clusterer_losses(model: nn.Module, batch: Tensor, permutation: Tensor) -> ClustererLosses:
    """Forward the batch once and compute L (Eq. 2) and L' (Eq. 3) against the shuffled batch X'.

    Algorithm 1 passes the shuffled batch X' = X[permutation] through the network. In train mode that
    output is exactly ``model(X)[permutation]``: BatchNorm's batch statistics do not depend on the order
    of the batch and the attention pools per patch (``tests/test_clusterer_losses.py`` checks the
    equality). So X' is not forwarded again: same values, same gradients, half the cost, and the
    BatchNorm running statistics are updated once per step instead of twice.
    """
    features = model(batch)
    shuffled_features = features[permutation]
    return ClustererLosses(
        clustering=clustering_loss(features),
        contrastive=shuffled_contrastive_loss(features, shuffled_features),
    )


def clusterer_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Tensor,
    permutation: Tensor,
    *,
    precision: Precision = "fp32",
) -> ClustererLosses:
    """One update of Algorithm 1 (lines 9-18): compute L + L' and take one optimiser step.

    Args:
        model: The clusterer, in training mode.
        optimizer: Its optimiser.
        batch: Normalised patches (B, C, H, W), float32, on the model's device.
        permutation: A derangement of the batch (long, B).
        precision: ``"bf16"`` computes the forward pass and the losses under bfloat16 autocast
            (:mod:`eo_models.precision`; weights and optimiser state stay float32), ``"fp32"`` without.

    Returns:
        The losses computed before the step, detached.
    """
    with autocast(precision, batch.device):
        losses = compute_clusterer_losses(model, batch, permutation)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated in torch
    optimizer.step()
    return ClustererLosses(clustering=losses.clustering.detach(), contrastive=losses.contrastive.detach())


def batch_indices_for_epoch(
    num_patches: int, batch_size: int, generator: np.random.Generator
) -> list[np.ndarray]:
    """Split a random permutation of all patch indices into batches of ``batch_size``.

    The last batch may be smaller; a leftover single patch joins the previous batch instead, because
    the contrastive loss needs at least two patches. Indices are sorted within each batch (the order
    within a batch does not matter to the losses) so that chunked stores read them in storage order.

    Raises:
        ValueError: If there are fewer than 2 patches.
    """
    if num_patches < 2:
        raise ValueError(f"training needs at least 2 patches, the patch source has {num_patches}")
    order = generator.permutation(num_patches)
    batches = [order[start : start + batch_size] for start in range(0, num_patches, batch_size)]
    if len(batches[-1]) == 1:
        leftover = batches.pop()
        batches[-1] = np.concatenate([batches[-1], leftover])
    return [np.sort(batch) for batch in batches]


def _build_optimizer(params: ClustererTrainingParams, model: nn.Module) -> torch.optim.Optimizer:
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=params.learning_rate, momentum=0.9)


def train_clusterer(
    patches: PatchSource,
    *,
    in_channels: int,
    params: ClustererTrainingParams,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    on_progress: Callable[[TrainingProgress], None] | None = None,
) -> dict[str, Any]:
    """Train a ``SingleSceneClusterer`` on one scene's patches (Algorithm 1) and return its checkpoint.

    On the CPU the result is a pure function of the inputs and ``params.seed``: same seed, bitwise
    identical weights (on CUDA, cuDNN's algorithm choice may differ in the last bits). The global torch
    RNG state of the caller is left untouched.

    Args:
        patches: The scene's patches, normalised with ``band_mean``/``band_std``.
        in_channels: Number of bands per patch.
        params: Hyper-parameters.
        band_mean: Per-band means used to normalise the patches; stored for prediction.
        band_std: Per-band standard deviations, likewise.
        on_progress: Called once per batch after its J updates.

    Returns:
        Checkpoint dict (``docs/interfaces.md``), family ``"clusterer"``, CPU tensors; pass it to
        ``eo_models.checkpoint.save_checkpoint`` or ``eo_models.predict.load_predictor``.

    Raises:
        ValueError: On inconsistent inputs (band statistics, patch shapes, fewer than 2 patches, NaN).
        FloatingPointError: If the loss becomes NaN or infinite.
    """
    check_band_statistics(in_channels, band_mean, band_std)
    device = resolve_device(params.device)
    precision = resolve_precision(params.precision, device, training=True)
    config = ClustererConfig(in_channels=in_channels, num_classes=params.num_classes)
    with seeded(params.seed, torch.device("cpu")):
        model = SingleSceneClusterer(config)
    prepare_model(model.to(device).train(), precision)
    optimizer = _build_optimizer(params, model)
    steps = _Algorithm1Steps(patches, model, optimizer, params, in_channels, device, precision)
    history: dict[str, list[float]] = {"loss": [], "clustering_loss": [], "contrastive_loss": []}
    fit(steps, epochs=params.epochs, history=history, history_per="step", on_progress=on_progress)
    return assemble_checkpoint(
        family="clusterer",
        model_config=asdict(config),
        band_mean=band_mean,
        band_std=band_std,
        num_classes=params.num_classes,
        train_params={
            **asdict(params),
            "resolved_device": str(device),
            "resolved_precision": precision,
            "num_patches": len(patches),
            "in_channels": in_channels,
        },
        history=history,
        model=model,
    )


class _Algorithm1Steps:
    """Algorithm 1 plugged into :func:`eo_models.training.fit`: a step is one batch's J updates."""

    def __init__(
        self,
        patches: PatchSource,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        params: ClustererTrainingParams,
        in_channels: int,
        device: torch.device,
        precision: Precision,
    ) -> None:
        self.patches, self.model, self.optimizer = patches, model, optimizer
        self.params, self.in_channels, self.device = params, in_channels, device
        self.precision = precision
        # One generator for the whole run: patch order of every epoch and every derangement.
        self.generator = np.random.default_rng(params.seed)
        self.updates = 0
        self.updates_per_step = params.iterations

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        batches = batch_indices_for_epoch(len(self.patches), self.params.batch_size, self.generator)
        return [batch.tolist() for batch in batches]

    def training_step(self, epoch: int, indices: Sequence[int]) -> dict[str, float]:
        params = self.params
        batch = read_batch(
            self.patches, indices, in_channels=self.in_channels, patch_size=params.patch_size
        ).to(self.device)
        batch = to_memory_format(batch, self.precision)
        clustering_sum = torch.zeros((), device=self.device)
        contrastive_sum = torch.zeros((), device=self.device)
        for _ in range(params.iterations):
            # Algorithm 1 shuffles inside the J loop (line 16): a fresh derangement each update, so
            # every patch meets several different negatives.
            permutation = torch.as_tensor(
                random_derangement(len(indices), self.generator), device=self.device
            )
            losses = clusterer_training_step(
                self.model, self.optimizer, batch, permutation, precision=self.precision
            )
            clustering_sum += losses.clustering
            contrastive_sum += losses.contrastive
            self.updates += 1
        # One device->host sync per batch, not per update.
        clustering = clustering_sum.item() / params.iterations
        contrastive = contrastive_sum.item() / params.iterations
        return {
            "loss": clustering + contrastive,
            "clustering_loss": clustering,
            "contrastive_loss": contrastive,
            "iteration": float(self.updates),
        }
