"""mCL-LC self-supervised pre-training (Tang et al. 2023, Algorithm 1, Eq. 9) on unlabelled patches.

Returns a checkpoint in the format of ``docs/interfaces.md`` (family ``"mcl-lc"``): the ``state_dict``
of :class:`~eo_models.mcl_lc.model.MclLcModel` (network, heads, MINE) with ``extra["stage"] ==
"pretrain"``. It cannot predict (no classes yet): its ``model_config`` has ``num_classes == 0``, while
the top-level ``num_classes`` is 1 only because the checkpoint format requires a value in [1, 256].
``extra`` holds the optimiser and scheduler state and the number of finished epochs, so a run can be
continued (:mod:`eo_models.mcl_lc.schedule` keeps a resumed run equal to an uninterrupted one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from eo_models import training as skeleton
from eo_models.mcl_lc.augment import make_view_pair
from eo_models.mcl_lc.deeplabv3plus import DEFAULT_ASPP_RATES
from eo_models.mcl_lc.model import MclLcLosses, MclLcModel, PretrainParams, plain_dict
from eo_models.mcl_lc.resnet import load_resnet50_weights
from eo_models.mcl_lc.rois import sample_matched_rois
from eo_models.mcl_lc.schedule import SeededEpochs, restore_optimisation
from eo_models.precision import Precision, autocast, prepare_model, resolve_precision, to_memory_format
from eo_models.predict import resolve_device
from eo_models.training import PatchSource, Progress

__all__ = [
    "FAMILY",
    "PRETRAIN_METRICS",
    "PretrainProgress",
    "parameter_groups",
    "pretrain_mcl_lc",
    "pretrain_step",
]

FAMILY = "mcl-lc"
PRETRAIN_METRICS = ("loss", "feature_loss", "semantic_loss", "local_consistency_loss", "mutual_information")

PretrainProgress = Progress
"""Reported after every pre-training update: the batch's losses (metrics ``loss``, ``feature_loss``,
``semantic_loss``, ``local_consistency_loss``, ``mutual_information``), before the update."""


def pretrain_step(
    model: MclLcModel,
    optimizer: torch.optim.Optimizer,
    patches: torch.Tensor,
    *,
    params: PretrainParams,
    generator: torch.Generator,
    band_mean: Sequence[float] | None = None,
    band_std: Sequence[float] | None = None,
    precision: Precision = "fp32",
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
        precision: ``"bf16"`` computes the forward pass and the losses under bfloat16 autocast
            (:mod:`eo_models.precision`; weights and optimiser state stay float32), ``"fp32"`` without.

    Returns:
        The losses of the batch before the update.
    """
    views = make_view_pair(
        patches,
        params=params.augment,
        generator=generator,
        roi_size=params.roi_size,
        band_mean=band_mean,
        band_std=band_std,
    )
    rois = None
    if params.losses.local_consistency:
        rois = sample_matched_rois(
            views.matrices_a,
            views.matrices_b,
            view_size=(patches.shape[-2], patches.shape[-1]),
            num_rois=params.num_rois,
            roi_size=params.roi_size,
            generator=generator,
        )
    shift = int(torch.randint(1, patches.shape[0], (), generator=generator))
    with autocast(precision, patches.device):
        losses = model.compute_losses(
            views, rois, switches=params.losses, temperature=params.temperature, mine_shift=shift
        )
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated in torch
    optimizer.step()
    return losses


def parameter_groups(model: MclLcModel, params: PretrainParams) -> list[dict[str, Any]]:
    """Adam's parameter groups: one for the whole model, or the statistics network apart.

    With ``params.mine_learning_rate`` set, MINE's statistics network ``T`` (``model.mine``) is a
    second group at that rate; otherwise one group, so optimiser states of earlier runs still load.
    """
    if params.mine_learning_rate is None:
        return [{"params": list(model.parameters())}]
    statistics = list(model.mine.parameters())
    kept = {id(parameter) for parameter in statistics}
    rest = [parameter for parameter in model.parameters() if id(parameter) not in kept]
    return [{"params": rest}, {"params": statistics, "lr": params.mine_learning_rate}]


class _PretrainSteps(SeededEpochs):
    """Algorithm 1 plugged into :func:`eo_models.training.fit`."""

    params: PretrainParams

    def __init__(
        self,
        patches: PatchSource,
        model: MclLcModel,
        *,
        params: PretrainParams,
        in_channels: int,
        band_mean: Sequence[float],
        band_std: Sequence[float],
        device: torch.device,
        precision: Precision,
    ) -> None:
        super().__init__(
            len(patches), parameter_groups(model, params), params=params, in_channels=in_channels,
            device=device,
        )  # fmt: skip
        self.patches, self.model, self.band_mean, self.band_std = patches, model, band_mean, band_std
        self.precision = precision

    def training_step(self, epoch: int, indices: Sequence[int]) -> dict[str, float]:
        batch = skeleton.read_batch(
            self.patches, indices, in_channels=self.in_channels, patch_size=self.params.patch_size
        )
        losses = pretrain_step(
            self.model,
            self.optimizer,
            to_memory_format(batch.to(self.device), self.precision),
            params=self.params,
            generator=self.generator,
            band_mean=self.band_mean,
            band_std=self.band_std,
            precision=self.precision,
        )
        self.scheduler.step()
        return {
            "loss": losses.total.item(),
            "feature_loss": losses.feature.item(),
            "semantic_loss": losses.semantic.item(),
            "local_consistency_loss": losses.local_consistency.item(),
            "mutual_information": losses.mutual_information.item(),
        }


def pretrain_mcl_lc(
    patches: PatchSource,
    *,
    in_channels: int,
    params: PretrainParams,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    on_progress: Callable[[Progress], None] | None = None,
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
        Pre-training checkpoint dict (CPU tensors); feed it to
        :func:`eo_models.mcl_lc.finetune.finetune_mcl_lc`.

    Raises:
        ValueError: On inconsistent inputs (band statistics, shapes, too few patches, bad resume).
        FloatingPointError: If a loss becomes NaN or infinite.
    """
    skeleton.check_band_statistics(in_channels, band_mean, band_std)
    num_patches = len(patches)
    if num_patches < 2:
        raise ValueError(f"pre-training needs at least 2 patches (contrastive negatives), got {num_patches}")
    last_epoch = params.epochs if stop_after_epoch is None else min(stop_after_epoch, params.epochs)
    device = resolve_device(params.device)
    precision = resolve_precision(params.precision, device, training=True)
    history: dict[str, list[float]] = {key: [] for key in PRETRAIN_METRICS}
    with skeleton.seeded(params.seed, device):
        model = MclLcModel(in_channels=in_channels, **params.model_options())
        if params.encoder_weights is not None:
            load_resnet50_weights(model.network.backbone, params.encoder_weights)
        prepare_model(model.to(device).train(), precision)
        plan = _PretrainSteps(
            patches,
            model,
            params=params,
            in_channels=in_channels,
            band_mean=band_mean,
            band_std=band_std,
            device=device,
            precision=precision,
        )
        start_epoch = 0
        if resume_from is not None:
            _check_resumable(resume_from, in_channels, params.epochs)
            model.load_state_dict(resume_from["state_dict"])
            start_epoch = restore_optimisation(
                resume_from["extra"], plan.optimizer, plan.scheduler, plan.total_steps
            )
            history = {key: list(values) for key, values in resume_from["history"].items()}
        skeleton.fit(
            plan,
            epochs=params.epochs,
            start_epoch=start_epoch,
            stop_epoch=last_epoch,
            history=history,
            history_per="epoch",
            on_progress=on_progress,
            may_be_nan=("mutual_information",),
        )
    model_config = {
        "in_channels": in_channels,
        "num_classes": 0,
        "aspp_rates": list(DEFAULT_ASPP_RATES),
        "aspp_dropout": params.aspp_dropout,
        "output_stride": 16,
    }
    return skeleton.assemble_checkpoint(
        family=FAMILY,
        model_config=model_config,
        band_mean=band_mean,
        band_std=band_std,
        num_classes=1,
        train_params={
            **plain_dict(params),
            "resolved_device": str(device),
            "resolved_precision": precision,
            "num_patches": num_patches,
            "in_channels": in_channels,
            "steps_per_epoch": plan.steps,
        },
        history=history,
        model=model,
        extra={"stage": "pretrain", "epoch": max(last_epoch, start_epoch), **plan.optimisation_state()},
    )


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
