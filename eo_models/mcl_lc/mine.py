"""Mutual information neural estimation (MINE, Belghazi et al., ICML 2018) for mCL-LC.

mCL-LC's local-consistency loss (Tang et al., WACV 2023, Sec. 3.2, Eq. 6-8) maximises the mutual
information between matched ROIs of the two views' semantic maps, estimated "based on the MINE
algorithm [3], which is implemented by back propagation in a two-layer fully connected network".

The estimate is the Donsker-Varadhan lower bound
``I(X; Y) >= E_joint[T(x, y)] - log E_marginal[exp(T(x, y'))]``, with joint samples the matched ROI
pairs and marginal samples made by pairing each ROI with the matching-position ROI of another patch
of the batch. The statistics network ``T`` is trained jointly with the segmentation network by the
same loss: both ascend the bound. Gradients use MINE's bias correction, a moving average of the
marginal term's denominator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DEFAULT_EMA_RATE", "MutualInformation", "MutualInformationEstimator", "StatisticsNetwork"]

from eo_models.mcl_lc.params import DEFAULT_EMA_RATE  # the MINE paper's moving-average rate


class StatisticsNetwork(nn.Module):
    """Two-layer fully connected statistics network ``T(x, y)`` on concatenated inputs.

    Args:
        features: Size of one flattened input (x and y each).
        hidden_features: Width of the hidden layer.
    """

    def __init__(self, features: int, *, hidden_features: int = 256) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(2 * features, hidden_features), nn.ReLU(inplace=True), nn.Linear(hidden_features, 1)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scores pairs: (..., features) and (..., features) to (...)."""
        scores: torch.Tensor = self.layers(torch.cat([x, y], dim=-1))
        return scores.squeeze(-1)


@dataclass(frozen=True)
class MutualInformation:
    """Result of one MINE evaluation.

    Attributes:
        estimate: Donsker-Varadhan estimate per ROI index, (R,), in nats.
        objective: Scalar to maximise: its value is ``estimate.mean()``, its gradient the
            bias-corrected MINE gradient.
    """

    estimate: torch.Tensor
    objective: torch.Tensor


class MutualInformationEstimator(nn.Module):
    """MINE estimator of ``I(X_j; Y_j)`` per ROI index ``j`` over a batch.

    Args:
        features: Size of one flattened sample of X (and of Y).
        hidden_features: Width of the statistics network's hidden layer.
        ema_rate: Rate of the moving average of ``E_marginal[exp(T)]`` (bias correction).
    """

    log_marginal_ema: torch.Tensor  # a registered buffer (torch types buffers as Tensor | Module)

    def __init__(
        self, features: int, *, hidden_features: int = 256, ema_rate: float = DEFAULT_EMA_RATE
    ) -> None:
        super().__init__()
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in (0, 1], got {ema_rate}")
        self.features = features
        self.ema_rate = ema_rate
        self.statistics = StatisticsNetwork(features, hidden_features=hidden_features)
        # log of the moving average; NaN until the first training call. A buffer, so that it is
        # saved with the state_dict and a resumed run continues with it.
        self.register_buffer("log_marginal_ema", torch.tensor(float("nan")))

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, shift: int | None = None) -> MutualInformation:
        """Estimates the mutual information between paired samples.

        Args:
            x: Samples (N, R, features) or (N, features); row ``k`` pairs with row ``k`` of ``y``.
            y: Samples of the same shape.
            shift: Marginal samples pair ``x[k]`` with ``y[(k - shift) mod N]``; a roll rather than
                a random permutation, so that no pair stays joint. Drawn at random when ``None``.

        Returns:
            The estimate per ROI index and the training objective.
        """
        if x.shape != y.shape:
            raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.ndim == 2:
            x, y = x.unsqueeze(1), y.unsqueeze(1)
        count = x.shape[0]
        if count < 2:
            raise ValueError("MINE needs at least two samples to build marginal pairs")
        if shift is None:
            shift = int(torch.randint(1, count, ()).item())
        if shift % count == 0:
            raise ValueError(f"shift {shift} keeps every pair joint for a batch of {count}")
        joint = self.statistics(x, y)
        marginal = self.statistics(x, y.roll(shift, dims=0))
        joint_mean = joint.mean(dim=0)
        log_mean_exp_marginal = torch.logsumexp(marginal, dim=0) - math.log(count)
        estimate = joint_mean - log_mean_exp_marginal
        log_ema = self._update_moving_average(log_mean_exp_marginal.detach())
        # Surrogate whose gradient replaces 1 / E[exp(T)] by 1 / moving average (MINE, Sec. 3.2).
        surrogate = joint_mean - torch.exp(log_mean_exp_marginal - log_ema)
        objective = (estimate.detach() + surrogate - surrogate.detach()).mean()
        return MutualInformation(estimate=estimate, objective=objective)

    def _update_moving_average(self, log_mean_exp_marginal: torch.Tensor) -> torch.Tensor:
        batch_value = torch.logsumexp(log_mean_exp_marginal, dim=0) - math.log(log_mean_exp_marginal.numel())
        current = self.log_marginal_ema
        if not self.training:
            return batch_value if torch.isnan(current) else current
        if torch.isnan(current) or self.ema_rate == 1.0:
            updated = batch_value
        else:
            updated = torch.logaddexp(
                current + math.log(1.0 - self.ema_rate), batch_value + math.log(self.ema_rate)
            )
        self.log_marginal_ema.copy_(updated)
        return updated
