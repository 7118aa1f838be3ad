"""Training loops of mCL-LC: self-supervised pre-training (Algorithm 1) and supervised fine-tuning.

Both return checkpoint dicts in the format of ``docs/interfaces.md`` (family ``"mcl-lc"``):

- pre-training: ``state_dict`` of :class:`~eo_models.mcl_lc.model.MclLcModel` (network, heads, MINE);
  ``extra["stage"] == "pretrain"``. It cannot predict (no classes yet): its ``model_config`` has
  ``num_classes == 0``, while the top-level ``num_classes`` is 1 only because the checkpoint format
  requires a value in [1, 256].
- fine-tuning: ``state_dict`` of the :class:`~eo_models.mcl_lc.deeplabv3plus.DeepLabV3Plus` that
  ``build_mcl_lc_segmenter(model_config)`` rebuilds; ``extra["stage"] == "finetune"``.

``extra`` holds the optimiser and scheduler state and the number of finished epochs, so a run can be
continued. Every epoch's randomness (order, augmentation, dropout, MINE pairing) is seeded from
``(seed, epoch)``, so on the CPU a resumed run gives the same weights as an uninterrupted one. The
caller's global RNG state is left untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eo_models.mcl_lc.augment import make_view_pair, sample_matched_rois
from eo_models.checkpoint import FORMAT_VERSION
from eo_models.mcl_lc.deeplabv3plus import DEFAULT_ASPP_RATES, DeepLabV3Plus
from eo_models.mcl_lc.model import FinetuneParams, MclLcLosses, MclLcModel, PretrainParams, plain_dict
from eo_models.predict import resolve_device
from eo_models.mcl_lc.resnet import load_resnet50_weights
from eo_models.clusterer.train import PatchSource

__all__ = [
    "FinetuneProgress",
    "LabelledPatchSource",
    "PretrainProgress",
    "finetune_mcl_lc",
    "finetune_step",
    "pretrain_mcl_lc",
    "pretrain_step",
    "segmentation_loss",
]

FAMILY = "mcl-lc"
_PRETRAIN_METRICS = ("loss", "feature_loss", "semantic_loss", "local_consistency_loss", "mutual_information")


@runtime_checkable
class LabelledPatchSource(Protocol):
    """Labelled patches for fine-tuning."""

    def __len__(self) -> int:
        """Number of patches."""
        ...

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, C, P, P) float32, normalised, and labels (N, P, P) int64 (-1: unlabelled)."""
        ...


@dataclass(frozen=True)
class PretrainProgress:
    """Reported after every pre-training update (losses of that batch, before the update)."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    feature_loss: float
    semantic_loss: float
    local_consistency_loss: float
    mutual_information: float


@dataclass(frozen=True)
class FinetuneProgress:
    """Reported after every fine-tuning update."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def _rng_devices(device: torch.device) -> list[int]:
    # CUDA generators whose state fork_rng restores (torch.manual_seed reseeds them all).
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _steps_per_epoch(num_patches: int, batch_size: int, cap: int | None) -> int:
    # Full batches only (BatchNorm and NT-Xent want full batches); at least one, of all patches.
    steps = max(1, num_patches // batch_size)
    return steps if cap is None else max(1, min(steps, cap))


def _batch_indices(order: torch.Tensor, step: int, batch_size: int) -> list[int]:
    return order[step * batch_size : (step + 1) * batch_size].tolist()


def _cosine_factor(step: int, total_steps: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    # Closed form (not CosineAnnealingLR's recursive one), so that a resumed run with more epochs
    # continues on its own, longer schedule instead of one derived from the last stored rate.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine_factor(step, total_steps))


def _restore_optimisation(
    extra: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    total_steps: int,
) -> int:
    # A copy: the optimiser updates its state in place and must not change the caller's checkpoint.
    optimizer.load_state_dict(copy.deepcopy(extra["optimizer_state"]))
    scheduler.load_state_dict(extra["scheduler_state"])
    factor = _cosine_factor(scheduler.last_epoch, total_steps)
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * factor
    return int(extra["epoch"])


def _check_finite(losses: dict[str, float], epoch: int, step: int) -> None:
    if not all(np.isfinite(value) for key, value in losses.items() if key != "mutual_information"):
        raise FloatingPointError(
            f"loss became non-finite in epoch {epoch}, step {step}: {losses}; check the patch "
            "normalisation or lower the learning rate"
        )


def pretrain_step(
    model: MclLcModel,
    optimizer: torch.optim.Optimizer,
    patches: torch.Tensor,
    *,
    params: PretrainParams,
    generator: torch.Generator,
    band_mean: Sequence[float] | None = None,
    band_std: Sequence[float] | None = None,
) -> MclLcLosses:
    """One update of Algorithm 1: two views, matched ROIs, Eq. 9, backward, optimiser step.

    Args:
        model: The pre-training model, in train mode.
        optimizer: Optimiser over all of the model's parameters (MINE's included).
        patches: (N, C, P, P) normalised patches on the model's device.
        params: Pre-training settings.
        generator: CPU generator for augmentation, ROI and MINE pairing randomness.
        band_mean: Normalisation means (colour distortion and clouds work in physical units).
        band_std: Normalisation stds.

    Returns:
        The losses of the batch before the update.
    """
    views = make_view_pair(
        patches, params=params.augment, generator=generator, roi_size=params.roi_size,
        band_mean=band_mean, band_std=band_std,
    )
    rois = None
    if params.losses.local_consistency:
        rois = sample_matched_rois(
            views.matrices_a, views.matrices_b, view_size=tuple(patches.shape[-2:]),  # type: ignore[arg-type]
            num_rois=params.num_rois, roi_size=params.roi_size, generator=generator,
        )
    shift = int(torch.randint(1, patches.shape[0], (), generator=generator))
    losses = model.compute_losses(
        views, rois, switches=params.losses, temperature=params.temperature, mine_shift=shift
    )
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    return losses


def _read_patches(
    patches: PatchSource, indices: list[int], in_channels: int, patch_size: int
) -> torch.Tensor:
    array = np.asarray(patches.read(indices), dtype=np.float32)
    expected = (len(indices), in_channels, patch_size, patch_size)
    if array.shape != expected:
        raise ValueError(
            f"patch source returned shape {array.shape}, expected {expected}; set in_channels and "
            "params.patch_size to the source's band count and patch size"
        )
    if not np.isfinite(array).all():
        raise ValueError("patch source returned NaN or infinite values; fill nodata (e.g. with 0) first")
    return torch.from_numpy(array)


def pretrain_mcl_lc(
    patches: PatchSource,
    *,
    in_channels: int,
    params: PretrainParams,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    on_progress: Callable[[PretrainProgress], None] | None = None,
    resume_from: dict[str, Any] | None = None,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Self-supervised mCL-LC pre-training of DeepLabv3+ on unlabelled patches.

    Args:
        patches: Patches normalised with ``band_mean``/``band_std``, ``params.patch_size`` square.
        in_channels: Bands per patch.
        params: Settings (paper defaults; use fewer epochs and smaller batches on a CPU).
        band_mean: Per-band means of the normalisation; stored for prediction.
        band_std: Per-band stds, likewise.
        on_progress: Called after every update.
        resume_from: A pre-training checkpoint of this function to continue from its stored epoch
            up to ``params.epochs``.
        stop_after_epoch: Return after this many epochs (counted from the start of the run, not of
            this call) although ``params.epochs`` are planned; the learning-rate schedule stays the
            one of ``params.epochs``, so that chunks resumed one after another equal one whole run.

    Returns:
        Pre-training checkpoint dict (CPU tensors); feed it to :func:`finetune_mcl_lc`.

    Raises:
        ValueError: On inconsistent inputs (band statistics, shapes, too few patches, bad resume).
        FloatingPointError: If a loss becomes NaN or infinite.
    """
    if len(band_mean) != in_channels or len(band_std) != in_channels:
        raise ValueError(
            f"expected {in_channels} band means and stds, got {len(band_mean)} and {len(band_std)}"
        )
    if min(float(s) for s in band_std) <= 0:
        raise ValueError(f"band_std values must be > 0, got {list(band_std)}")
    num_patches = len(patches)
    if num_patches < 2:
        raise ValueError(f"pre-training needs at least 2 patches (contrastive negatives), got {num_patches}")
    batch_size = min(params.batch_size, num_patches)
    steps = _steps_per_epoch(num_patches, batch_size, params.max_steps_per_epoch)
    last_epoch = params.epochs if stop_after_epoch is None else min(stop_after_epoch, params.epochs)
    device = resolve_device(params.device)
    history: dict[str, list[float]] = {key: [] for key in _PRETRAIN_METRICS}
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(params.seed)
        model = MclLcModel(
            in_channels=in_channels, projection_dim=params.projection_dim, roi_size=params.roi_size,
            mine_hidden_features=params.mine_hidden_features, mine_ema_rate=params.mine_ema_rate,
            aspp_dropout=params.aspp_dropout,
        )
        if params.encoder_weights is not None:
            load_resnet50_weights(model.network.backbone, params.encoder_weights)
        model.to(device).train()
        optimizer = torch.optim.Adam(
            model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        scheduler = _cosine_schedule(optimizer, params.epochs * steps)
        start_epoch = 0
        if resume_from is not None:
            _check_resumable(resume_from, in_channels, params.epochs)
            model.load_state_dict(resume_from["state_dict"])
            start_epoch = _restore_optimisation(
                resume_from["extra"], optimizer, scheduler, params.epochs * steps
            )
            history = {key: list(values) for key, values in resume_from["history"].items()}
        for epoch in range(start_epoch, last_epoch):
            seed = _epoch_seed(params.seed, epoch)
            torch.manual_seed(seed)  # dropout
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(num_patches, generator=generator)
            sums = dict.fromkeys(history, 0.0)
            for step in range(steps):
                indices = _batch_indices(order, step, batch_size)
                batch = _read_patches(patches, indices, in_channels, params.patch_size)
                losses = pretrain_step(
                    model, optimizer, batch.to(device), params=params, generator=generator,
                    band_mean=band_mean, band_std=band_std,
                )
                scheduler.step()
                values = {
                    "loss": losses.total.item(), "feature_loss": losses.feature.item(),
                    "semantic_loss": losses.semantic.item(),
                    "local_consistency_loss": losses.local_consistency.item(),
                    "mutual_information": losses.mutual_information.item(),
                }
                _check_finite(values, epoch + 1, step + 1)
                for key, value in values.items():
                    sums[key] += value
                if on_progress is not None:
                    on_progress(PretrainProgress(epoch + 1, params.epochs, step + 1, steps, **values))
            for key in history:
                history[key].append(sums[key] / steps)
    model_config = {
        "in_channels": in_channels, "num_classes": 0, "aspp_rates": list(DEFAULT_ASPP_RATES),
        "aspp_dropout": params.aspp_dropout, "output_stride": 16,
    }
    return {
        "format_version": FORMAT_VERSION,
        "family": FAMILY,
        "model_config": model_config,
        "band_mean": [float(v) for v in band_mean],
        "band_std": [float(v) for v in band_std],
        "num_classes": 1,
        "train_params": {
            **plain_dict(params), "resolved_device": str(device), "num_patches": num_patches,
            "in_channels": in_channels, "steps_per_epoch": steps,
        },
        "history": history,
        "state_dict": _cpu_state(model),
        "extra": {
            "stage": "pretrain", "epoch": max(last_epoch, start_epoch),
            "optimizer_state": _cpu_tree(optimizer.state_dict()), "scheduler_state": scheduler.state_dict(),
        },
    }


def _check_resumable(ckpt: dict[str, Any], in_channels: int, epochs: int) -> None:
    if ckpt.get("family") != FAMILY or ckpt.get("extra", {}).get("stage") != "pretrain":
        raise ValueError("resume_from must be a pre-training checkpoint returned by pretrain_mcl_lc")
    if int(ckpt["extra"]["epoch"]) > epochs:
        raise ValueError(
            f"resume_from has finished {ckpt['extra']['epoch']} epochs; set params.epochs above that"
        )
    if ckpt["model_config"]["in_channels"] != in_channels:
        raise ValueError(
            f"resume_from has {ckpt['model_config']['in_channels']} bands, in_channels is {in_channels}"
        )


# No copies: the model and optimiser are local to the training function and dropped after it, so
# the checkpoint may keep their (CPU) storage; copying ~50 M parameters three times costs seconds.
def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def _cpu_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _cpu_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_tree(item) for item in value)
    return value


def _random_flips(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    # Exact index operations, identical for images and labels (no interpolation of labels).
    choices = torch.randint(0, 2, (images.shape[0], 2), generator=generator)
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)
    out_images, out_labels = [], []
    for image, label, (flip_h, flip_v), k in zip(images, labels, choices.tolist(), turns.tolist()):
        dims = [d for d, flip in ((-1, flip_h), (-2, flip_v)) if flip]
        if dims:
            image, label = image.flip(dims), label.flip(dims)
        out_images.append(image.rot90(k, dims=(-2, -1)))
        out_labels.append(label.rot90(k, dims=(-2, -1)))
    return torch.stack(out_images), torch.stack(out_labels)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int) -> torch.Tensor:
    """Mean cross entropy over labelled pixels (0 when a batch has none, instead of NaN)."""
    summed = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return summed / (labels != ignore_index).sum().clamp_min(1)


def finetune_step(
    network: DeepLabV3Plus,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -1,
) -> torch.Tensor:
    """One supervised update with cross entropy; returns the loss before the update."""
    loss = segmentation_loss(network(images), labels, ignore_index=ignore_index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _read_labelled(
    labelled: LabelledPatchSource, indices: list[int], in_channels: int, params: FinetuneParams
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = labelled.read(indices)
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[:2] != (len(indices), in_channels):
        raise ValueError(
            f"labelled source returned images of shape {images.shape}; "
            f"expected ({len(indices)}, {in_channels}, P, P)"
        )
    if labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"labels have shape {labels.shape}, expected {(images.shape[0], *images.shape[2:])}")
    if not np.isfinite(images).all():
        raise ValueError("labelled source returned NaN or infinite pixel values; fill nodata (e.g. 0) first")
    bad = (labels != params.ignore_index) & ((labels < 0) | (labels >= params.num_classes))
    if bad.any():
        raise ValueError(
            f"labels hold values outside [0, {params.num_classes}) other than ignore_index "
            f"{params.ignore_index}, e.g. {labels[bad][:5].tolist()}; check num_classes"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _network_from_checkpoint(ckpt: dict[str, Any], num_classes: int) -> DeepLabV3Plus:
    if ckpt.get("family") != FAMILY:
        raise ValueError(f"expected an mCL-LC checkpoint (family 'mcl-lc'), got {ckpt.get('family')!r}")
    config = ckpt["model_config"]
    network = DeepLabV3Plus(
        in_channels=int(config["in_channels"]),
        num_classes=num_classes,
        aspp_rates=tuple(config.get("aspp_rates", DEFAULT_ASPP_RATES)),
        aspp_dropout=float(config.get("aspp_dropout", 0.5)),
        output_stride=int(config.get("output_stride", 16)),
    )
    stage = ckpt["extra"].get("stage")
    if stage == "pretrain":
        prefix = "network."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    elif stage == "finetune":
        state = dict(ckpt["state_dict"])
        if int(config["num_classes"]) != num_classes:  # a new label set: keep E and D, new classifier
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    else:
        raise ValueError(f"checkpoint extra['stage'] is {stage!r}; expected 'pretrain' or 'finetune'")
    result = network.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint weights do not fit DeepLabv3+: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return network


def finetune_mcl_lc(
    checkpoint: dict[str, Any],
    labelled: LabelledPatchSource,
    *,
    params: FinetuneParams,
    on_progress: Callable[[FinetuneProgress], None] | None = None,
) -> dict[str, Any]:
    """Supervised fine-tuning of a pre-trained mCL-LC network with a new classifier.

    Args:
        checkpoint: A pre-training (or fine-tuning) checkpoint of family ``"mcl-lc"``.
        labelled: Labelled patches normalised with the checkpoint's band statistics.
        params: Settings; ``num_classes`` is required.
        on_progress: Called after every update.

    Returns:
        Fine-tuned checkpoint dict that ``eo_models.predict.load_predictor`` can use.

    Raises:
        ValueError: On inconsistent inputs (checkpoint, shapes, labels out of range).
        FloatingPointError: If the loss becomes NaN or infinite.
    """
    in_channels = int(checkpoint["model_config"]["in_channels"])
    num_patches = len(labelled)
    if num_patches < 2:
        raise ValueError(f"fine-tuning needs at least 2 labelled patches (BatchNorm), got {num_patches}")
    batch_size = min(params.batch_size, num_patches)
    steps = _steps_per_epoch(num_patches, batch_size, params.max_steps_per_epoch)
    device = resolve_device(params.device)
    history: dict[str, list[float]] = {"loss": []}
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(params.seed)
        network = _network_from_checkpoint(checkpoint, params.num_classes).to(device)
        encoder = network.encoder_modules()
        if params.freeze_encoder:
            for module in encoder:
                module.requires_grad_(False)
        trainable = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
        scheduler = _cosine_schedule(optimizer, params.epochs * steps)
        for epoch in range(params.epochs):
            seed = _epoch_seed(params.seed, epoch)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            network.train()
            if params.freeze_encoder:  # frozen means BatchNorm statistics and dropout too
                for module in encoder:
                    module.eval()
            order = torch.randperm(num_patches, generator=generator)
            total = 0.0
            for step in range(steps):
                indices = _batch_indices(order, step, batch_size)
                images, labels = _read_labelled(labelled, indices, in_channels, params)
                if params.augment_flips:
                    images, labels = _random_flips(images, labels, generator)
                loss = finetune_step(
                    network, optimizer, images.to(device), labels.to(device), ignore_index=params.ignore_index
                ).item()
                scheduler.step()
                _check_finite({"loss": loss}, epoch + 1, step + 1)
                total += loss
                if on_progress is not None:
                    on_progress(FinetuneProgress(epoch + 1, params.epochs, step + 1, steps, loss))
            history["loss"].append(total / steps)
    model_config = {
        "in_channels": in_channels, "num_classes": params.num_classes,
        "aspp_rates": [int(r) for r in checkpoint["model_config"].get("aspp_rates", DEFAULT_ASPP_RATES)],
        "aspp_dropout": float(checkpoint["model_config"].get("aspp_dropout", 0.5)),
        "output_stride": int(checkpoint["model_config"].get("output_stride", 16)),
    }
    return {
        "format_version": FORMAT_VERSION,
        "family": FAMILY,
        "model_config": model_config,
        "band_mean": list(checkpoint["band_mean"]),
        "band_std": list(checkpoint["band_std"]),
        "num_classes": params.num_classes,
        "train_params": {
            **plain_dict(params), "resolved_device": str(device), "num_patches": num_patches,
            "steps_per_epoch": steps, "pretrain": checkpoint.get("train_params", {}),
        },
        "history": history,
        "state_dict": _cpu_state(network),
        "extra": {
            "stage": "finetune", "epoch": params.epochs,
            "optimizer_state": _cpu_tree(optimizer.state_dict()), "scheduler_state": scheduler.state_dict(),
        },
    }
