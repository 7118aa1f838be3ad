"""mCL-LC supervised fine-tuning: a pre-trained DeepLabv3+ with a new classifier on labelled patches.

Returns a checkpoint in the format of ``docs/interfaces.md`` (family ``"mcl-lc"``): the ``state_dict``
of the :class:`~eo_models.mcl_lc.deeplabv3plus.DeepLabV3Plus` that
:func:`~eo_models.mcl_lc.deeplabv3plus.build_mcl_lc_segmenter` rebuilds, ``extra["stage"] == "finetune"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from eo_models.mcl_lc.deeplabv3plus import DEFAULT_ASPP_RATES, DeepLabV3Plus, build_mcl_lc_segmenter
from eo_models.mcl_lc.model import FinetuneParams, plain_dict
from eo_models.mcl_lc.pretrain import FAMILY
from eo_models.mcl_lc.schedule import SeededEpochs
from eo_models.precision import Precision, autocast, prepare_model, resolve_precision, to_memory_format
from eo_models.predict import resolve_device
from eo_models.training import Progress, assemble_checkpoint, fit, seeded

__all__ = ["FinetuneProgress", "LabelledPatchSource", "finetune_mcl_lc", "finetune_step", "segmentation_loss"]

FinetuneProgress = Progress
"""Reported after every fine-tuning update (metric ``loss``)."""


@runtime_checkable
class LabelledPatchSource(Protocol):
    """Labelled patches for fine-tuning."""

    def __len__(self) -> int:
        """Number of patches."""
        ...

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, C, P, P) float32, normalised, and labels (N, P, P) int64 (-1: unlabelled)."""
        ...


def _random_flips(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    # Exact index operations, identical for images and labels (no interpolation of labels).
    choices = torch.randint(0, 2, (images.shape[0], 2), generator=generator)
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)
    out_images, out_labels = [], []
    for image, label, (flip_h, flip_v), k in zip(
        images, labels, choices.tolist(), turns.tolist(), strict=True
    ):
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
    precision: Precision = "fp32",
) -> torch.Tensor:
    """One supervised update with cross entropy; returns the loss before the update.

    ``precision="bf16"``: the forward pass and the loss under bfloat16 autocast (weights stay float32).
    """
    with autocast(precision, images.device):
        loss = segmentation_loss(network(images), labels, ignore_index=ignore_index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return loss.detach()


def _read_labelled(
    labelled: LabelledPatchSource, indices: Sequence[int], in_channels: int, params: FinetuneParams
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = labelled.read(indices)
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[:2] != (len(indices), in_channels):
        raise ValueError(
            f"labelled source returned images of shape {images.shape}; expected ({len(indices)}, "
            f"{in_channels}, P, P)"
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


def _segmenter_config(ckpt: dict[str, Any], num_classes: int) -> dict[str, Any]:
    config = ckpt["model_config"]
    return {
        "in_channels": int(config["in_channels"]),
        "num_classes": num_classes,
        "aspp_rates": [int(r) for r in config.get("aspp_rates", DEFAULT_ASPP_RATES)],
        "aspp_dropout": float(config.get("aspp_dropout", 0.5)),
        "output_stride": int(config.get("output_stride", 16)),
    }


def _network_from_checkpoint(ckpt: dict[str, Any], num_classes: int) -> DeepLabV3Plus:
    if ckpt.get("family") != FAMILY:
        raise ValueError(f"expected an mCL-LC checkpoint (family 'mcl-lc'), got {ckpt.get('family')!r}")
    network = build_mcl_lc_segmenter(_segmenter_config(ckpt, num_classes))
    stage = ckpt["extra"].get("stage")
    if stage == "pretrain":
        prefix = "network."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    elif stage == "finetune":
        state = dict(ckpt["state_dict"])
        if int(ckpt["model_config"]["num_classes"]) != num_classes:  # a new label set: new classifier
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    else:
        raise ValueError(f"checkpoint extra['stage'] is {stage!r}; expected 'pretrain' or 'finetune'")
    result = network.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint weights do not fit DeepLabv3+: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}"
        )
    return network


class _FinetuneSteps(SeededEpochs):
    """Supervised fine-tuning plugged into :func:`eo_models.training.fit`."""

    params: FinetuneParams

    def __init__(
        self,
        labelled: LabelledPatchSource,
        network: DeepLabV3Plus,
        *,
        params: FinetuneParams,
        in_channels: int,
        device: torch.device,
        precision: Precision,
    ) -> None:
        self.precision = precision
        trainable = [p for p in network.parameters() if p.requires_grad]
        super().__init__(len(labelled), trainable, params=params, in_channels=in_channels, device=device)
        self.labelled, self.network = labelled, network
        self.encoder = network.encoder_modules()

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        batches = super().epoch_batches(epoch)
        self.network.train()
        if self.params.freeze_encoder:  # frozen means BatchNorm statistics and dropout too
            for module in self.encoder:
                module.eval()
        return batches

    def training_step(self, epoch: int, indices: Sequence[int]) -> dict[str, float]:
        images, labels = _read_labelled(self.labelled, indices, self.in_channels, self.params)
        if self.params.augment_flips:
            images, labels = _random_flips(images, labels, self.generator)
        loss = finetune_step(
            self.network,
            self.optimizer,
            to_memory_format(images.to(self.device), self.precision),
            labels.to(self.device),
            ignore_index=self.params.ignore_index,
            precision=self.precision,
        ).item()
        self.scheduler.step()
        return {"loss": loss}


def finetune_mcl_lc(
    checkpoint: dict[str, Any],
    labelled: LabelledPatchSource,
    *,
    params: FinetuneParams,
    on_progress: Callable[[Progress], None] | None = None,
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
    device = resolve_device(params.device)
    precision = resolve_precision(params.precision, device, training=True)
    history: dict[str, list[float]] = {"loss": []}
    with seeded(params.seed, device):
        network = _network_from_checkpoint(checkpoint, params.num_classes).to(device)
        prepare_model(network, precision)
        if params.freeze_encoder:
            for module in network.encoder_modules():
                module.requires_grad_(False)
        plan = _FinetuneSteps(
            labelled, network, params=params, in_channels=in_channels, device=device, precision=precision
        )
        fit(plan, epochs=params.epochs, history=history, history_per="epoch", on_progress=on_progress)
    return assemble_checkpoint(
        family=FAMILY,
        model_config=_segmenter_config(checkpoint, params.num_classes),
        band_mean=checkpoint["band_mean"],
        band_std=checkpoint["band_std"],
        num_classes=params.num_classes,
        train_params={
            **plain_dict(params),
            "resolved_device": str(device),
            "resolved_precision": precision,
            "num_patches": num_patches,
            "steps_per_epoch": plan.steps,
            "pretrain": checkpoint.get("train_params", {}),
        },
        history=history,
        model=network,
        extra={"stage": "finetune", "epoch": params.epochs, **plan.optimisation_state()},
    )
