"""mCL-LC: multi-level contrastive learning with local consistency (Tang et al., WACV 2023).

The pre-training model couples the DeepLabv3+ encoder ``E`` and decoder ``D`` with the two projection
heads and the MINE statistics network, and computes the loss of Eq. 9,
``L = L_fl + L_sl + L_lc``, where each term can be switched off (the paper's Table 3 ablation):

- ``L_fl`` (Eq. 2-3): NT-Xent on ``g_f(f(p))``, ``f`` the style feature of ``E(p)`` (Eq. 1).
- ``L_sl`` (Eq. 4-5): NT-Xent on ``g_s(mu(D(E(p))))``, ``mu`` the per-channel spatial mean.
- ``L_lc`` (Eq. 6-8): minus the mean MINE estimate of the mutual information between matched ROIs of
  the two views' semantic maps ``D(E(p))``.

Hyper-parameter defaults and their sources are on :class:`PretrainParams` and :class:`FinetuneParams`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from eo_models.mcl_lc.augment import AugmentParams, MatchedRois, ViewPair, extract_rois
from eo_models.mcl_lc.contrastive import (
    DEFAULT_PROJECTION_DIM,
    ProjectionHead,
    channel_mean,
    nt_xent_loss,
    style_feature,
)
from eo_models.mcl_lc.deeplabv3plus import DEFAULT_ASPP_RATES, FEATURE_CHANNELS, DeepLabV3Plus
from eo_models.mcl_lc.mine import DEFAULT_EMA_RATE, MutualInformationEstimator

__all__ = [
    "FinetuneParams",
    "LossSwitches",
    "MclLcLosses",
    "MclLcModel",
    "PretrainParams",
    "plain_dict",
]


@dataclass(frozen=True)
class LossSwitches:
    """Which terms of Eq. 9 are used (Table 3 of the paper ablates them).

    Attributes:
        feature: Feature-level contrastive loss ``L_fl``.
        semantic: Semantic-level contrastive loss ``L_sl``.
        local_consistency: Local-consistency (mutual information) loss ``L_lc``.
    """

    feature: bool = True
    semantic: bool = True
    local_consistency: bool = True

    def __post_init__(self) -> None:
        if not (self.feature or self.semantic or self.local_consistency):
            raise ValueError("at least one of the three mCL-LC loss terms must be switched on")


@dataclass(frozen=True)
class PretrainParams:
    """Self-supervised pre-training settings. Defaults are the paper's (Sec. 4.1) unless noted.

    Attributes:
        epochs: Training epochs (paper: 200).
        batch_size: Patches per batch, i.e. N positive pairs (paper: 64).
        patch_size: Side of the square patches the source must deliver (paper: 256).
        learning_rate: Initial Adam learning rate (paper: 0.001), decayed by a cosine schedule
            (paper: "cosine decay schedule") to 0 over all steps.
        weight_decay: Adam weight decay (paper: none given; 0).
        temperature: NT-Xent ``tau`` (paper: not given; 0.5 as in SimCLR's small-batch setting and
            GLCNet's code, the baseline mCL-LC is compared with).
        num_rois: Matched ROIs per patch pair ``N_R`` (paper: 12).
        roi_size: ROI side in pixels (paper: 8).
        losses: Switches for the three terms of Eq. 9 (paper: all on).
        projection_dim: Output size of ``g_f`` and ``g_s`` (paper: not given; SimCLR's 128).
        mine_hidden_features: Hidden width of the two-layer statistics network (paper: not given).
        mine_ema_rate: Moving-average rate of MINE's bias-corrected gradient (MINE paper: 0.01).
        aspp_dropout: Dropout after ASPP fusion (torchvision/smp DeepLabv3+: 0.5).
        augment: Augmentation settings, pseudo clouds included (the paper's "mCL-LC+").
        encoder_weights: Optional local path of a torchvision-layout ResNet-50 ``state_dict`` to
            start the backbone from (the paper does not say; default: random init).
        max_steps_per_epoch: Cap on updates per epoch (``None``: one pass over the patches).
        seed: Seed of initialisation, shuffling, augmentation and dropout.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"``, ...
    """

    epochs: int = 200
    batch_size: int = 64
    patch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 0.5
    num_rois: int = 12
    roi_size: int = 8
    losses: LossSwitches = field(default_factory=LossSwitches)
    projection_dim: int = DEFAULT_PROJECTION_DIM
    mine_hidden_features: int = 256
    mine_ema_rate: float = DEFAULT_EMA_RATE
    aspp_dropout: float = 0.5
    augment: AugmentParams = field(default_factory=AugmentParams)
    encoder_weights: str | None = None
    max_steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check_positive(epochs=self.epochs, learning_rate=self.learning_rate, temperature=self.temperature,
                        num_rois=self.num_rois, roi_size=self.roi_size, projection_dim=self.projection_dim)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive negatives), got {self.batch_size}")
        if not self.roi_size <= self.patch_size:
            raise ValueError(f"roi_size {self.roi_size} must not exceed patch_size {self.patch_size}")
        if self.patch_size < 32:
            raise ValueError(f"patch_size must be >= 32 (the encoder has stride 16), got {self.patch_size}")


@dataclass(frozen=True)
class FinetuneParams:
    """Supervised fine-tuning settings. Defaults are the paper's (Sec. 4.1) unless noted.

    Attributes:
        num_classes: Number of classes of the labels.
        epochs: Fine-tuning epochs (paper: 20).
        batch_size: Patches per batch (paper: not given; GLCNet's fine-tuning default, 16).
        learning_rate: Initial Adam learning rate (paper: 0.0001), cosine-decayed like pre-training.
        weight_decay: Adam weight decay (paper: none given; 0).
        freeze_encoder: Train only the decoder and classifier, keeping ``E`` (backbone and ASPP,
            BatchNorm statistics included) fixed; default trains the whole network.
        ignore_index: Label value of unlabelled pixels, left out of the loss.
        augment_flips: Random flips and quarter turns, applied to images and labels alike.
        max_steps_per_epoch: Cap on updates per epoch (``None``: one pass over the patches).
        seed: Seed of the classifier initialisation, shuffling, augmentation and dropout.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"``, ...
    """

    num_classes: int
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    freeze_encoder: bool = False
    ignore_index: int = -1
    augment_flips: bool = True
    max_steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check_positive(num_classes=self.num_classes, epochs=self.epochs, learning_rate=self.learning_rate)
        if self.num_classes > 256:
            raise ValueError(f"num_classes must be <= 256 (labels are uint8), got {self.num_classes}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm needs two samples), got {self.batch_size}")
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {self.ignore_index} collides with a class index")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def plain_dict(params: Any) -> dict[str, Any]:
    """A params dataclass as nested dicts and lists (what ``torch.load(weights_only=True)`` reads)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return plain(asdict(params))


@dataclass(frozen=True)
class MclLcLosses:
    """Loss terms of one batch; switched-off terms are zero tensors.

    Attributes:
        total: ``L`` of Eq. 9, the sum of the switched-on terms.
        feature: ``L_fl`` (Eq. 2).
        semantic: ``L_sl`` (Eq. 4).
        local_consistency: ``L_lc`` (Eq. 6).
        mutual_information: Mean MINE estimate in nats (detached; NaN when ``L_lc`` is off).
    """

    total: torch.Tensor
    feature: torch.Tensor
    semantic: torch.Tensor
    local_consistency: torch.Tensor
    mutual_information: torch.Tensor


class MclLcModel(nn.Module):
    """DeepLabv3+ (``E``, ``D``) with mCL-LC's projection heads and MINE statistics network.

    Args:
        in_channels: Number of input bands.
        projection_dim: Output size of both projection heads.
        roi_size: ROI side; fixes the statistics network's input size.
        mine_hidden_features: Hidden width of the statistics network.
        mine_ema_rate: MINE's moving-average rate.
        aspp_rates: ASPP dilation rates.
        aspp_dropout: Dropout after ASPP fusion.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        projection_dim: int = DEFAULT_PROJECTION_DIM,
        roi_size: int = 8,
        mine_hidden_features: int = 256,
        mine_ema_rate: float = DEFAULT_EMA_RATE,
        aspp_rates: tuple[int, ...] = DEFAULT_ASPP_RATES,
        aspp_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.network = DeepLabV3Plus(
            in_channels=in_channels, num_classes=0, aspp_rates=aspp_rates, aspp_dropout=aspp_dropout
        )
        self.feature_head = ProjectionHead(2 * FEATURE_CHANNELS, out_features=projection_dim)
        self.semantic_head = ProjectionHead(FEATURE_CHANNELS, out_features=projection_dim)
        self.mine = MutualInformationEstimator(
            FEATURE_CHANNELS * roi_size * roi_size,
            hidden_features=mine_hidden_features,
            ema_rate=mine_ema_rate,
        )
        self.roi_size = roi_size

    def compute_losses(
        self,
        views: ViewPair,
        rois: MatchedRois | None,
        *,
        switches: LossSwitches,
        temperature: float,
        mine_shift: int | None = None,
    ) -> MclLcLosses:
        """Eq. 9 on a batch of view pairs.

        Both views go through the network as one batch of 2N (BatchNorm sees both, as in SimCLR).

        Args:
            views: The two augmented views and their transforms.
            rois: Matched ROI points (needed when ``switches.local_consistency``).
            switches: Which terms to compute.
            temperature: NT-Xent ``tau``.
            mine_shift: Batch offset of MINE's marginal pairs (random when ``None``).
        """
        count = views.view_a.shape[0]
        view_size = (views.view_a.shape[-2], views.view_a.shape[-1])
        zero = views.view_a.new_zeros(())
        feature_loss = semantic_loss = lc_loss = zero
        mutual_information = zero + float("nan")
        encoded = self.network.encode(torch.cat([views.view_a, views.view_b], dim=0))
        if switches.feature:
            z = self.feature_head(style_feature(encoded.encoded))
            feature_loss = nt_xent_loss(z[:count], z[count:], temperature=temperature)
        if switches.semantic or switches.local_consistency:
            semantic_map = self.network.decode(encoded)
            if switches.semantic:
                s = self.semantic_head(channel_mean(semantic_map))
                semantic_loss = nt_xent_loss(s[:count], s[count:], temperature=temperature)
            if switches.local_consistency:
                if rois is None:
                    raise ValueError("the local-consistency loss needs matched ROIs")
                rois_a = extract_rois(semantic_map[:count], rois.points_a, view_size).flatten(start_dim=2)
                rois_b = extract_rois(semantic_map[count:], rois.points_b, view_size).flatten(start_dim=2)
                estimate = self.mine(rois_a, rois_b, shift=mine_shift)
                lc_loss = -estimate.objective
                mutual_information = estimate.estimate.mean().detach()
        total = feature_loss + semantic_loss + lc_loss
        return MclLcLosses(total, feature_loss, semantic_loss, lc_loss, mutual_information)
