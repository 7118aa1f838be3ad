"""Losses of the single-scene clusterer (Saha et al., 2021, Eq. 1-3) and the batch shuffle they need.

All functions take the raw network output y of shape (B, K, H, W): B patches, K features per pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "clustering_loss",
    "pseudo_labels",
    "random_derangement",
    "shuffle_batch",
    "shuffled_contrastive_loss",
]


def pseudo_labels(y: Tensor) -> Tensor:
    """Eq. 1: each pixel's cluster is the index of its largest feature.

    Args:
        y: Raw features, shape (B, K, H, W).

    Returns:
        Long tensor of shape (B, H, W) with values in [0, K); ties go to the lowest index.
    """
    return y.argmax(dim=1)


def clustering_loss(y: Tensor) -> Tensor:
    """Eq. 2: cross-entropy of the features against their own argmax pseudo-labels.

    The pseudo-labels are computed from a detached copy of y: they are targets, not a function to
    differentiate (argmax has no gradient anyway). Minimising the loss sharpens each pixel's current
    assignment, which is the "refine labels and weights together" step of deep clustering.

    Args:
        y: Raw features, shape (B, K, H, W).

    Returns:
        Scalar: the mean over all pixels of all patches of -log softmax(y_n)[c_n].
    """
    return F.cross_entropy(y, pseudo_labels(y.detach()))


def shuffled_contrastive_loss(y: Tensor, y_shuffled: Tensor) -> Tensor:
    """Eq. 3: mean over pixels of exp(-||y_n - y'_n||_1), the L1 norm taken across the K features.

    y' is the output for a shuffled batch, so pixel n of patch b is compared with pixel n of a
    *different* patch. The loss is near 1 when the two are alike and falls towards 0 as they differ,
    so minimising it pushes the network to give different patches different features.

    Args:
        y: Raw features of the batch, shape (B, K, H, W).
        y_shuffled: Raw features of the shuffled batch, same shape.

    Returns:
        Scalar in (0, 1].
    """
    if y.shape != y_shuffled.shape:
        raise ValueError(
            f"y and y_shuffled must have the same shape, got {tuple(y.shape)} and {tuple(y_shuffled.shape)}"
        )
    l1_distance = (y - y_shuffled).abs().sum(dim=1)
    return torch.exp(-l1_distance).mean()


def random_derangement(size: int, generator: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of range(size) with no fixed points.

    Rejection sampling: a random permutation is a derangement with probability ~1/e, so this takes
    about 2.7 draws on average, and every derangement is equally likely.

    Args:
        size: Number of elements, at least 2 (a single element cannot be deranged).
        generator: Source of randomness; the only one used, so results are reproducible.

    Returns:
        int64 array ``p`` of length ``size`` with ``p[i] != i`` for every i.

    Raises:
        ValueError: If size < 2.
    """
    if size < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {size}")
    identity = np.arange(size)
    while True:
        permutation = generator.permutation(size)
        if not np.any(permutation == identity):
            return permutation.astype(np.int64)


def shuffle_batch(x: Tensor, generator: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Shuffle a batch of patches along the batch axis so that no patch stays in place.

    The paper only says "shuffle X to X'" and that x^b and x^b' are "unpaired". A plain random
    permutation would leave some patches paired with themselves (on average one per batch), and for
    those the contrastive loss would push the network's features apart from themselves, which is
    impossible and only adds noise. So the permutation is a derangement: every patch is paired with a
    different one.

    A batch of one patch has no other patch to pair with, so it is refused rather than paired with a
    flipped or otherwise augmented copy of itself, which would be a positive pair, not a negative.
    ``train_clusterer`` never builds single-patch batches (a leftover single patch joins the previous
    batch).

    Args:
        x: Batch of shape (B, ...) with B >= 2.
        generator: numpy random generator that draws the permutation.

    Returns:
        ``(x[permutation], permutation)``, the permutation as a long tensor on x's device.

    Raises:
        ValueError: If B < 2.
    """
    if x.shape[0] < 2:
        raise ValueError(
            f"shuffle_batch needs at least 2 patches to pair each with a different one, got {x.shape[0]}"
        )
    permutation = torch.from_numpy(random_derangement(x.shape[0], generator)).to(x.device)
    return x[permutation], permutation
