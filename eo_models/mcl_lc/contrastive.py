"""Contrastive pieces of mCL-LC: style feature, projection heads and the NT-Xent loss.

Tang et al. (WACV 2023), Sec. 3.1: the feature level contrasts ``z = g_f(f(p))`` with the style
feature ``f(p) = concat(mu(E(p)), sigma(E(p)))`` (Eq. 1); the semantic level contrasts
``s = g_s(mu(D(E(p))))`` (Eq. 4-5). Both use SimCLR's NT-Xent (Eq. 2-3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_PROJECTION_DIM", "ProjectionHead", "channel_mean", "nt_xent_loss", "style_feature"]

from eo_models.mcl_lc.params import DEFAULT_PROJECTION_DIM  # SimCLR's; the paper gives none for g_f / g_s


def channel_mean(feature_map: torch.Tensor) -> torch.Tensor:
    """The paper's channel-wise mean ``mu``: the spatial mean of each channel.

    Args:
        feature_map: Tensor (B, C, H, W).

    Returns:
        Tensor (B, C).
    """
    return feature_map.mean(dim=(-2, -1))


def style_feature(feature_map: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Style feature of Eq. 1: per-channel spatial mean and standard deviation, concatenated.

    The paper's text names the second statistic "variance" but writes it as sigma; the standard
    deviation is used here (as in style-transfer statistics), which keeps both halves in the same
    units. ``eps`` keeps the square root differentiable on constant channels.

    Args:
        feature_map: Tensor (B, C, H, W), e.g. the encoder output ``E(p)``.
        eps: Added to the variance before the square root.

    Returns:
        Tensor (B, 2C).
    """
    flat = feature_map.flatten(start_dim=2)
    mean = flat.mean(dim=2)
    std = (flat.var(dim=2, unbiased=False) + eps).sqrt()
    return torch.cat([mean, std], dim=1)


class ProjectionHead(nn.Module):
    """SimCLR's non-linear projection head: Linear, ReLU, Linear.

    Args:
        in_features: Size of the input vector.
        hidden_features: Size of the hidden layer (defaults to ``in_features``, as in SimCLR).
        out_features: Size of the projection.
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden_features: int | None = None,
        out_features: int = DEFAULT_PROJECTION_DIM,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projects (B, in_features) to (B, out_features)."""
        projected: torch.Tensor = self.layers(x)
        return projected


def nt_xent_loss(view_a: torch.Tensor, view_b: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over a batch of positive pairs (SimCLR).

    Row ``k`` of ``view_a`` and row ``k`` of ``view_b`` are a positive pair; every other of the
    ``2N`` embeddings is a negative. Each of the ``2N`` anchors contributes
    ``-log(exp(sim(a, pos) / tau) / sum_{j != a} exp(sim(a, j) / tau))`` with cosine similarity, and
    the loss is their mean, i.e. ``1/(2N) sum_k (l(a_k, b_k) + l(b_k, a_k))`` as in Eq. 2 and 4.

    The denominator runs over all ``2N - 1`` other embeddings, positive included, as in SimCLR (and
    GLCNet's code, which mCL-LC compares against); Eq. 3's text ("the rest of the patch sets") also
    reads as that set.

    Args:
        view_a: Embeddings (N, D) of the first views.
        view_b: Embeddings (N, D) of the second views.
        temperature: ``tau`` in Eq. 3.

    Returns:
        Scalar loss.
    """
    if view_a.shape != view_b.shape or view_a.ndim != 2:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {view_a.shape} and {view_b.shape}")
    if view_a.shape[0] < 2:
        raise ValueError("NT-Xent needs at least two pairs (a negative) in the batch")
    count = view_a.shape[0]
    embeddings = F.normalize(torch.cat([view_a, view_b], dim=0), dim=1)
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(2 * count, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(logits.device)
    return F.cross_entropy(logits, positives)
