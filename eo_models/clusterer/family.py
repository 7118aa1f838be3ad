"""The clusterer as a model family (:class:`eo_models.family.ModelFamily`), with its scene-wide context.

Scene context: the channel attention pools its average and max descriptors over the whole input. Over
a scene predicted tile by tile, the pass :class:`AttentionPooling` sums the features (float64), counts
the pixels and takes the maxima over each tile's own pixels (read with a halo at least the
convolutions' radius), which reduce exactly to the whole-scene descriptors; the second pass predicts
every tile with them, so tiled inference equals whole-scene inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from eo_models.clusterer.params import ClustererTrainingParams
from eo_models.family import ModelFamily

if TYPE_CHECKING:
    import torch
    from torch import nn

    from eo_models.clusterer.model import SingleSceneClusterer

__all__ = ["AttentionPooling", "ClustererFamily"]

Moments = tuple[np.ndarray, int, np.ndarray]


class AttentionPooling:
    """The clusterer's channel-attention descriptors pooled over a whole scene (a ``SceneContext``)."""

    def features(self, model: nn.Module, normalised: torch.Tensor) -> torch.Tensor:
        """The five convolution blocks' output (N, width, H, W): what both passes start from."""
        features: torch.Tensor = cast("SingleSceneClusterer", model).feature_maps(normalised)
        return features

    def partial(self, model: nn.Module, features: torch.Tensor, inner: tuple[slice, slice]) -> Moments:
        """Sum (C,) float64, pixel count and max (C,) float64 of ``features`` (1, C, H, W) over ``inner``."""
        import torch

        from eo_models.clusterer.fused import bf16_moments

        kept = features[0][:, inner[0], inner[1]]
        if kept.dtype == torch.bfloat16 and kept.device.type == "cpu":  # fused bf16 path: sliced, exact
            total, maximum = bf16_moments(kept)
            return total.numpy(), int(kept.shape[1] * kept.shape[2]), maximum.double().numpy()
        # float64 accumulation: a float32 sum's rounding depends on torch's thread count, which
        # differs between Dask workers and this process; the labels must not.
        return (
            kept.double().sum(dim=(1, 2)).cpu().numpy(),
            int(kept.shape[1] * kept.shape[2]),
            kept.amax(dim=(1, 2)).double().cpu().numpy(),
        )

    def combine(self, partials: Sequence[Moments]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The scene's ``(average, max)`` descriptors (C,) each, as plain floats."""
        total = np.sum([p[0] for p in partials], axis=0)
        count = sum(p[1] for p in partials)
        maximum = np.max(np.stack([p[2] for p in partials]), axis=0)
        return tuple((total / count).tolist()), tuple(maximum.tolist())

    def forward(self, model: nn.Module, features: torch.Tensor, context: Any) -> torch.Tensor:
        """Cluster logits (N, K, H, W) of ``features``, the attention weighted by the scene's descriptors."""
        import torch

        average, maximum = (
            torch.as_tensor(np.asarray(d, np.float32), device=features.device)[None] for d in context
        )
        clusterer = cast("SingleSceneClusterer", model)
        logits: torch.Tensor = clusterer.classify_with_descriptors(features, average, maximum)
        return logits


class ClustererFamily(ModelFamily):
    """Saha et al. (2021): five 3x3 convolutions, channel attention, K features; Algorithm 1 training."""

    name = "clusterer"
    # Five stacked 3x3 convolutions see an 11x11 window (radius 5), so 5 px would remove every tile-cut
    # effect of the convolutions themselves; the attention's pooling is made scene-wide by the context
    # pass. 16 px (three times the radius) keeps the zero-padding border of each tile well outside the
    # kept region also when pooling per tile, at a small cost (a 512 px tile reads 544 px).
    halo = 16
    training_params = ClustererTrainingParams
    scene_context = AttentionPooling()
    summary = "single-scene clusterer of Saha et al. (2021), self-supervised on one unlabelled scene"

    def build(self, model_config: Mapping[str, Any]) -> nn.Module:
        """A ``SingleSceneClusterer`` from ``dataclasses.asdict(ClustererConfig)``."""
        from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer

        return SingleSceneClusterer(ClustererConfig(**model_config))

    def training_loop(self) -> Callable[..., dict[str, Any]]:
        """Algorithm 1 (:func:`eo_models.clusterer.train.train_clusterer`); no resume (runs take minutes)."""
        from eo_models.clusterer.train import train_clusterer

        return train_clusterer

    def default_model_config(self, in_channels: int) -> dict[str, Any]:
        """The model_config of a default clusterer with ``in_channels`` bands (for tests and demos)."""
        from eo_models.clusterer.model import ClustererConfig

        return asdict(ClustererConfig(in_channels=in_channels))
