"""Mutual information neural estimation (MINE, Belghazi et al., ICML 2018) for mCL-LC.

mCL-LC's local-consistency loss (Tang et al., WACV 2023, Sec. 3.2, Eq. 6-8) maximises the mutual
information between matched ROIs of the two views' semantic maps, estimated "based on the MINE
algorithm [3], which is implemented by back propagation in a two-layer fully connected network".

Two lower bounds of the MINE paper (``estimator``), with joint samples the matched ROI pairs:

- ``"dv"`` (default): the Donsker-Varadhan bound (MINE, Sec. 3.1, Eq. 10)
  ``I(X; Y) >= E_joint[T(x, y)] - log E_marginal[exp(T(x, y'))]``. Its mini-batch gradient is biased;
  MINE's bias correction (Sec. 3.2) replaces the denominator ``E_marginal[exp T]`` of the gradient by a
  moving average (rate ``ema_rate``).
- ``"f"``: MINE-f, the f-divergence bound (MINE, Sec. 3.1, after Nguyen et al. 2010)
  ``I(X; Y) >= E_joint[T] - E_marginal[exp(T - 1)]``. It is linear in the marginal expectation, so the
  mini-batch gradient is unbiased and no moving average is kept. For one ``T`` it is never above the
  DV value (``x / e >= log x``); both reach the MI at their optimal ``T`` (DV up to a constant, MINE-f
  at ``T = 1 + log dP/dQ``).

The statistics network ``T`` is trained jointly with the segmentation network by the same loss: both
ascend the bound. Measured at batch 4 and 8 (``benchmarks/bench_mine.py``, ``benchmarks/results/mine.md``)
MINE-f is *not* better behaved here: ``exp(T - 1)`` overflows at the second step (a marginal score
above ~89.7 after one Adam step at the paper's rate, on ``T``'s ``2 * 256 * 8 * 8`` inputs), where DV
only swings (estimates down to -15 / -37 nats; near 0 at a tenth of the rate). ``"dv"`` stays the
default. ``PretrainParams.mine_learning_rate`` steps ``T`` at its own rate (a separate Adam parameter
group): at 1e-4 the DV estimate stays within about 1 nat of 0 over 32 steps at batch 4, against swings
to -26 at the shared 0.001, but it does not become positive either (``benchmarks/results/mine.md``).

Marginal samples (``marginals``):

- ``"shifted"`` (default): each ROI paired with the matching-index ROI of another patch (a roll of
  the batch), so ``N`` joint and ``N`` marginal samples per index.
- ``"all-pairs"``: every ROI of view A is paired with every *other* ROI of view B in the
  batch (other patches and other positions of the same patch), and the estimate pools all matched
  pairs. The paper's ROIs are drawn at random positions, so ROI index ``j`` of one patch and of another
  have nothing in common: the per-index estimates of Eq. 6 all estimate the same quantity, and pooling
  them gives ``N * N_R`` joint and up to ``N * N_R * (N * N_R - 1)`` marginal samples instead of ``N``
  and ``N``. ``T``'s first layer is linear in ``[x, y]``, so all pairs cost one ``(M, M, hidden)``
  sum, not ``M^2`` evaluations of the layer. Measured at batch 4 (``benchmarks/bench_mine.py``,
  ``benchmarks/results/mine.md``) it does *not* cure the strongly negative estimate seen at CPU batch
  sizes: with many more marginal samples the log-mean-exp term comes closer to ``log E[exp T]``, which
  a statistics network with spread-out scores makes large, so the estimate was more negative (mean
  -8.8 nats over steps 9-16 against -1.9 with ``"shifted"``). Kept as an option for larger batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_EMA_RATE",
    "ESTIMATORS",
    "MARGINAL_SAMPLING",
    "MutualInformation",
    "MutualInformationEstimator",
    "StatisticsNetwork",
]

from eo_models.mcl_lc.params import DEFAULT_EMA_RATE  # the MINE paper's moving-average rate

MARGINAL_SAMPLING = ("all-pairs", "shifted")
"""How MINE's marginal samples are drawn (see the module docstring)."""

ESTIMATORS = ("dv", "f")
"""MINE's lower bounds: Donsker-Varadhan with a moving-average gradient, or MINE-f (module docstring)."""


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

    def pairwise(self, x: torch.Tensor, y: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """Scores ``T(x[i], y[partners[i, k]])`` of (M, features) samples: (M, K).

        The first layer splits into ``W_x x + W_y y + b``, computed once per sample; only the sum,
        ReLU and the output layer run per pair.
        """
        first, _relu, last = self.layers
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        features = x.shape[-1]
        from_x = F.linear(x, first.weight[:, :features])
        from_y = F.linear(y, first.weight[:, features:], first.bias)
        hidden = torch.relu(from_x[:, None, :] + from_y[partners])
        scores: torch.Tensor = last(hidden)
        return scores.squeeze(-1)


@dataclass(frozen=True)
class MutualInformation:
    """Result of one MINE evaluation.

    Attributes:
        estimate: Lower-bound estimate in nats (DV or MINE-f): per ROI index, (R,), for ``"shifted"``
            marginals; pooled over all ROIs, (1,), for ``"all-pairs"``.
        objective: Scalar to maximise: its value is ``estimate.mean()``; its gradient is MINE's
            bias-corrected one for ``"dv"``, the plain (unbiased) one for ``"f"``.
    """

    estimate: torch.Tensor
    objective: torch.Tensor


class MutualInformationEstimator(nn.Module):
    """MINE estimator of ``I(X_j; Y_j)`` per ROI index ``j`` over a batch.

    Args:
        features: Size of one flattened sample of X (and of Y).
        hidden_features: Width of the statistics network's hidden layer.
        ema_rate: Rate of the moving average of ``E_marginal[exp(T)]`` (``"dv"``'s bias correction).
        estimator: ``"dv"`` or ``"f"`` (MINE-f; see the module docstring).
        marginals: ``"all-pairs"`` or ``"shifted"`` (see the module docstring).
        max_partners: At most this many marginal partners per ROI with ``"all-pairs"`` (the nearest
            in a seeded rotation of the pooled ROIs), bounding memory at paper batch sizes.
    """

    log_marginal_ema: torch.Tensor  # a registered buffer (torch types buffers as Tensor | Module)

    def __init__(
        self,
        features: int,
        *,
        hidden_features: int = 256,
        ema_rate: float = DEFAULT_EMA_RATE,
        marginals: str = "shifted",
        estimator: str = "dv",
        max_partners: int = 255,
    ) -> None:
        super().__init__()
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in (0, 1], got {ema_rate}")
        if marginals not in MARGINAL_SAMPLING:
            raise ValueError(f"marginals must be one of {MARGINAL_SAMPLING}, got {marginals!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.marginals = marginals
        self.estimator = estimator
        self.max_partners = max_partners
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
            shift: ``"shifted"``: marginal samples pair ``x[k]`` with ``y[(k - shift) mod N]``, a roll
                rather than a random permutation, so that no pair stays joint. ``"all-pairs"``: the
                first partner offset of the rotation (used when partners are capped). Random when
                ``None``.

        Returns:
            The estimate per ROI index and the training objective.

        Raises:
            ValueError: For different shapes, fewer than two samples, or a shift that keeps pairs joint.
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
        if self.marginals == "all-pairs":
            joint_mean, log_mean_exp_marginal = self._pooled_terms(x, y, shift)
        else:
            joint = self.statistics(x, y)
            marginal = self.statistics(x, y.roll(shift, dims=0))
            joint_mean = joint.mean(dim=0)
            log_mean_exp_marginal = torch.logsumexp(marginal, dim=0) - math.log(count)
        if self.estimator == "f":
            # MINE-f: E_P[T] - E_Q[exp(T - 1)], with E_Q[exp T] = exp(log-mean-exp); unbiased gradient.
            estimate = joint_mean - torch.exp(log_mean_exp_marginal - 1.0)
            return MutualInformation(estimate=estimate, objective=estimate.mean())
        estimate = joint_mean - log_mean_exp_marginal
        log_ema = self._update_moving_average(log_mean_exp_marginal.detach())
        # Surrogate whose gradient replaces 1 / E[exp(T)] by 1 / moving average (MINE, Sec. 3.2).
        surrogate = joint_mean - torch.exp(log_mean_exp_marginal - log_ema)
        objective = (estimate.detach() + surrogate - surrogate.detach()).mean()
        return MutualInformation(estimate=estimate, objective=objective)

    def _pooled_terms(
        self, x: torch.Tensor, y: torch.Tensor, shift: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``E_joint[T]`` over all matched ROIs and ``log E_marginal[exp T]`` over unmatched pairs, (1,)."""
        x, y = x.flatten(0, 1), y.flatten(0, 1)  # (M = N * R, features)
        total = x.shape[0]
        partners_per_sample = min(total - 1, self.max_partners)
        # Partner k of sample i is (i + offset_k) mod M with offsets 1..M-1 (all others), or, capped,
        # a run of offsets starting after ``shift`` ROIs: never i itself.
        first = 1 if partners_per_sample == total - 1 else 1 + shift % (total - partners_per_sample)
        offsets = torch.arange(first, first + partners_per_sample, device=x.device)
        partners = (torch.arange(total, device=x.device)[:, None] + offsets[None, :]) % total
        joint_mean = self.statistics(x, y).mean().reshape(1)
        marginal = self.statistics.pairwise(x, y, partners)
        log_mean_exp_marginal = (
            torch.logsumexp(marginal.flatten(), dim=0) - math.log(marginal.numel())
        ).reshape(1)
        return joint_mean, log_mean_exp_marginal

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
