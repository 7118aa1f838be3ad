"""Model families by name: how to rebuild each ``nn.Module`` from a checkpoint's ``model_config``.

To add a family, add one entry to ``MODEL_BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.mcl_lc.deeplabv3plus import build_mcl_lc_segmenter

__all__ = ["MODEL_BUILDERS", "ModelFamily", "build_clusterer"]


@dataclass(frozen=True)
class ModelFamily:
    """How to build one family's model, and how much context its tiled inference needs.

    Attributes:
        build: Builds the (untrained) module from the checkpoint's ``model_config`` dict.
        halo: Pixels of context to read on each side of a tile before predicting it; the predictions
            in the halo are thrown away.
    """

    build: Callable[[Mapping[str, Any]], nn.Module]
    halo: int


def build_clusterer(model_config: Mapping[str, Any]) -> nn.Module:
    """Build a ``SingleSceneClusterer`` from ``dataclasses.asdict(ClustererConfig)``."""
    return SingleSceneClusterer(ClustererConfig(**model_config))


# Clusterer halo: five stacked 3x3 convolutions see an 11x11 window (radius 5), so 5 px would remove
# every tile-cut effect of the convolutions themselves. It cannot make tiled inference bit-identical to
# whole-scene inference, though: the channel attention pools over the whole input, so each pixel's
# output depends a little on the entire tile. 16 px (three times the radius) keeps the zero-padding
# border of each tile well outside the kept region and makes the pooled descriptors see mostly the same
# pixels as the neighbouring tiles' do, at a small cost (a 512 px tile reads 544 px).
MODEL_BUILDERS: dict[str, ModelFamily] = {
    "clusterer": ModelFamily(build=build_clusterer, halo=16),
    # mCL-LC (DeepLabv3+, ResNet-50 at output stride 16): the receptive field spans hundreds of pixels
    # and ASPP's image pooling is global, so no halo makes tiles exact; 64 px (four stride-16 cells)
    # keeps the zero-padding artefacts at tile borders away from the kept region.
    "mcl-lc": ModelFamily(build=build_mcl_lc_segmenter, halo=64),
}
