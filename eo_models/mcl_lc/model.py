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

from dataclasses import dataclass

import torch
from torch import nn

from eo_models.mcl_lc.augment import ViewPair
from eo_models.mcl_lc.contrastive import (
    DEFAULT_PROJECTION_DIM,
    ProjectionHead,
    channel_mean,
    nt_xent_loss,
    style_feature,
)
from eo_models.mcl_lc.deeplabv3plus import DEFAULT_ASPP_RATES, FEATURE_CHANNELS, DeepLabV3Plus
from eo_models.mcl_lc.mine import MutualInformationEstimator
from eo_models.mcl_lc.params import DEFAULT_EMA_RATE, FinetuneParams, LossSwitches, PretrainParams
from eo_models.mcl_lc.rois import MatchedRois, extract_rois
from eo_models.params import plain_dict

__all__ = [
    "FinetuneParams",
    "LossSwitches",
    "MclLcLosses",
    "MclLcModel",
    "PretrainParams",
    "plain_dict",
]


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
        mine_marginals: MINE's marginal samples, ``"all-pairs"`` or ``"shifted"``.
        mine_estimator: MINE's bound, ``"dv"`` (Donsker-Varadhan) or ``"f"`` (MINE-f).
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
        mine_marginals: str = "shifted",
        mine_estimator: str = "dv",
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
            marginals=mine_marginals,
            estimator=mine_estimator,
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
