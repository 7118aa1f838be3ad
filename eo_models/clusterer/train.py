"""Algorithm 1 of Saha et al. (2021): self-supervised training of the clusterer on one scene.

For each of I epochs, the scene's patches are visited in batches of B, in a seeded random order
without replacement; each batch is used for J consecutive updates, each minimising the clustering loss
(Eq. 2) plus the shuffled contrastive loss (Eq. 3). The result is a checkpoint dict in the format of
``docs/interfaces.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from eo_models.checkpoint import FORMAT_VERSION
from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.clusterer.losses import clustering_loss, random_derangement, shuffled_contrastive_loss
from eo_models.predict import resolve_device

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


@runtime_checkable
class PatchSource(Protocol):
    """Square patches of one scene, already normalised with the band statistics of the checkpoint."""

    def __len__(self) -> int:
        """Number of patches."""
        ...

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Patches ``indices`` as float32 of shape (len(indices), bands, patch, patch)."""
        ...


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
            raise ValueError(f"array of {rows}x{cols} pixels is smaller than one {patch_size}x{patch_size} patch")
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
            [self.array[:, row : row + size, col : col + size] for row, col in (self.origins[i] for i in indices)]
        )


@dataclass(frozen=True)
class ClustererTrainingParams:
    """Hyper-parameters of Algorithm 1.

    The paper gives I, J and K. It does not give the patch size, batch size, optimiser, learning rate,
    or input normalisation; the defaults here for those are ours, chosen as explained per field.

    Attributes:
        epochs: I, passes over all patches of the scene (paper: 2).
        iterations: J, consecutive updates on each batch (paper: 50).
        num_classes: K, output features = the most clusters (paper: 8, for 6 reference classes).
        patch_size: R' = C'. 64 px: the receptive field of the five 3x3 convolutions is only 11 px, so
            larger patches add no context to a pixel; they only change the batch statistics and the
            channel attention's pooling extent. 64 px patches keep these statistics local enough to
            differ between patches (which the contrastive term relies on) while giving a scene of
            about 1000 x 1000 px some 250 patches.
        batch_size: B. 16 patches of 64 x 64 = 65 536 pixels per batch: enough pixels for stable
            BatchNorm statistics, and a last-batch/derangement structure with plenty of negatives;
            about 0.5 GB of activations (batch and shuffled batch) on CPU or GPU.
        learning_rate: 1e-3 with Adam. Each batch gets J = 50 consecutive updates, so an optimiser
            whose step size does not depend on the gradient scale is the safer choice: the
            cross-entropy (up to log K) and the contrastive term (in (0, 1]) have very different
            gradient magnitudes, and both change as clusters sharpen. Adam at its standard 1e-3 needs
            no tuning for that; SGD (momentum 0.9) would, typically 0.01-0.1.
        optimizer: ``"adam"`` or ``"sgd"`` (SGD with momentum 0.9). One optimiser lives for the whole
            run, so its state carries over from batch to batch.
        seed: Seeds the weight initialisation (torch) and the patch order and shuffles (numpy).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    epochs: int = 2
    iterations: int = 50
    num_classes: int = 8
    patch_size: int = 64
    batch_size: int = 16
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "iterations", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClustererTrainingParams.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(
                f"ClustererTrainingParams.batch_size must be >= 2 (the contrastive loss pairs each patch "
                f"with another one), got {self.batch_size}"
            )
        if not 2 <= self.num_classes <= 256:
            raise ValueError(
                f"ClustererTrainingParams.num_classes must be in [2, 256] (labels are uint8), got {self.num_classes}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"ClustererTrainingParams.learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"ClustererTrainingParams.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


@dataclass(frozen=True)
class TrainingProgress:
    """Reported once per batch, after its J updates.

    Attributes:
        epoch: 1-based epoch number.
        batch: 1-based batch number within the epoch.
        batches_per_epoch: Number of batches in each epoch.
        iteration: Optimiser updates done so far in the whole run.
        loss: Mean of L + L' over this batch's J updates.
        clustering_loss: Mean of L (Eq. 2) over the J updates.
        contrastive_loss: Mean of L' (Eq. 3) over the J updates.
    """

    epoch: int
    batch: int
    batches_per_epoch: int
    iteration: int
    loss: float
    clustering_loss: float
    contrastive_loss: float


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
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Tensor, permutation: Tensor
) -> ClustererLosses:
    """One update of Algorithm 1 (lines 9-18): compute L + L' and take one optimiser step.

    Returns:
        The losses computed before the step, detached.
    """
    losses = compute_clusterer_losses(model, batch, permutation)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    return ClustererLosses(clustering=losses.clustering.detach(), contrastive=losses.contrastive.detach())


def batch_indices_for_epoch(num_patches: int, batch_size: int, generator: np.random.Generator) -> list[np.ndarray]:
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


def _read_batch(
    patches: PatchSource, indices: np.ndarray, in_channels: int, patch_size: int, device: torch.device
) -> Tensor:
    array = np.asarray(patches.read(indices.tolist()), dtype=np.float32)
    expected_shape = (len(indices), in_channels, patch_size, patch_size)
    if array.shape != expected_shape:
        raise ValueError(
            f"patch source returned shape {array.shape} for {len(indices)} patches; expected {expected_shape} "
            "(in_channels and params.patch_size must match the patch source)"
        )
    if not np.isfinite(array).all():
        raise ValueError("patch source returned NaN or infinite values; fill nodata (e.g. with 0) before training")
    return torch.from_numpy(array).to(device)


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
    if len(band_mean) != in_channels or len(band_std) != in_channels:
        raise ValueError(
            f"expected {in_channels} band means and stds, got {len(band_mean)} and {len(band_std)}"
        )
    num_patches = len(patches)
    device = resolve_device(params.device)
    config = ClustererConfig(in_channels=in_channels, num_classes=params.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = SingleSceneClusterer(config)
    model.to(device).train()
    optimizer = _build_optimizer(params, model)
    generator = np.random.default_rng(params.seed)

    history: dict[str, list[float]] = {"loss": [], "clustering_loss": [], "contrastive_loss": []}
    updates = 0
    for epoch in range(1, params.epochs + 1):
        epoch_batches = batch_indices_for_epoch(num_patches, params.batch_size, generator)
        for batch_number, indices in enumerate(epoch_batches, start=1):
            batch = _read_batch(patches, indices, in_channels, params.patch_size, device)
            clustering_sum = torch.zeros((), device=device)
            contrastive_sum = torch.zeros((), device=device)
            for _ in range(params.iterations):
                # Algorithm 1 shuffles inside the J loop (line 16): a fresh derangement each update, so
                # every patch meets several different negatives.
                permutation = torch.as_tensor(random_derangement(len(indices), generator), device=device)
                losses = clusterer_training_step(model, optimizer, batch, permutation)
                clustering_sum += losses.clustering
                contrastive_sum += losses.contrastive
                updates += 1
            # One device->host sync per batch, not per update.
            mean_clustering = clustering_sum.item() / params.iterations
            mean_contrastive = contrastive_sum.item() / params.iterations
            mean_total = mean_clustering + mean_contrastive
            if not np.isfinite(mean_total):
                raise FloatingPointError(
                    f"loss became {mean_total} in epoch {epoch}, batch {batch_number}; "
                    "check the patch normalisation or lower the learning rate"
                )
            history["loss"].append(mean_total)
            history["clustering_loss"].append(mean_clustering)
            history["contrastive_loss"].append(mean_contrastive)
            if on_progress is not None:
                on_progress(
                    TrainingProgress(
                        epoch=epoch,
                        batch=batch_number,
                        batches_per_epoch=len(epoch_batches),
                        iteration=updates,
                        loss=mean_total,
                        clustering_loss=mean_clustering,
                        contrastive_loss=mean_contrastive,
                    )
                )

    return {
        "format_version": FORMAT_VERSION,
        "family": "clusterer",
        "model_config": asdict(config),
        "band_mean": [float(value) for value in band_mean],
        "band_std": [float(value) for value in band_std],
        "num_classes": params.num_classes,
        "train_params": {
            **asdict(params),
            "resolved_device": str(device),
            "num_patches": num_patches,
            "in_channels": in_channels,
        },
        "history": history,
        "state_dict": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
        "extra": {},
    }
