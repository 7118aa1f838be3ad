"""The lightweight single-scene clusterer of Saha et al. (2021), "Segmentation of VHR EO Images using
Unsupervised Learning", Table 1.

Five same-size 3x3 convolutions with 64 kernels, each followed by ReLU and then BatchNorm, a CBAM-style
channel attention, and a final 1x1 convolution that projects every pixel to K features. There is no
stride and no pooling, so the output has the input's spatial size and every pixel gets K scores whose
argmax is its cluster (Eq. 1, see ``eo_models.clusterer.losses``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eo_models.clusterer.fused import bf16_classify, bf16_features, bf16_moments, use_bf16_path

__all__ = [
    "ChannelAttention",
    "ClustererConfig",
    "SingleSceneClusterer",
    "attention_hidden_width",
    "clusterer_parameter_count",
]


@dataclass(frozen=True)
class ClustererConfig:
    """Everything needed to rebuild a ``SingleSceneClusterer``; stored as the checkpoint's model_config.

    Attributes:
        in_channels: Number of input bands.
        num_classes: K, the number of output features and hence the most clusters the model can
            produce. The paper uses K = 8 for a scene with 6 reference classes.
        width: Kernels per 3x3 convolution (64 in the paper; "any other number could be chosen").
        depth: Number of 3x3 convolutions (L = 5 in Table 1).
        attention_reduction: Reduction ratio r of the channel attention's hidden layer
            (width -> width / r -> width); 16 is CBAM's default, which the paper follows.
    """

    in_channels: int
    num_classes: int = 8
    width: int = 64
    depth: int = 5
    attention_reduction: int = 16

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "depth", "attention_reduction"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ClustererConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(
                f"ClustererConfig.num_classes (K) must be an int >= 2, got {self.num_classes!r}: "
                "with one class every pixel gets the same label"
            )


def attention_hidden_width(channels: int, reduction: int) -> int:
    """Width of the channel attention's hidden layer: ``channels // reduction``, at least 1."""
    return max(1, channels // reduction)


class ChannelAttention(nn.Module):
    """Channel attention of CBAM (Woo et al., 2018), as the paper prescribes ([26] in the paper).

    Each channel is summarised twice over the whole spatial extent, by its average and by its maximum;
    one shared two-layer MLP (C -> C/r -> C, ReLU in between) scores both descriptors, the two scores
    are summed and squashed by a sigmoid, and the features are rescaled channel by channel.

    Because both descriptors pool over the whole image, the output at every pixel depends (weakly) on
    the entire input, not only on a neighbourhood; see the halo note in ``eo_models.registry``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        """Build the shared MLP.

        Args:
            channels: Number of feature channels C.
            reduction: Reduction ratio r of the hidden layer.
        """
        super().__init__()
        hidden = attention_hidden_width(channels, reduction)
        # nn.Linear with bias, like CBAM's reference implementation.
        self.shared_mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )

    def channel_weights(self, features: Tensor) -> Tensor:
        """Per-sample, per-channel weights in (0, 1), shape (B, C).

        bfloat16 features on a CPU (the fused bf16 inference path) are pooled by ``bf16_moments``: the
        average from an exact float64 sum, instead of a bfloat16 ``mean``.
        """
        if features.dtype == torch.bfloat16 and features.device.type == "cpu" and not self.training:
            moments = [bf16_moments(sample) for sample in features]
            count = features.shape[2] * features.shape[3]
            average = torch.stack([total / count for total, _ in moments]).float()
            return self.weights_from_descriptors(average, torch.stack([maximum for _, maximum in moments]))
        return self.weights_from_descriptors(features.mean(dim=(2, 3)), features.amax(dim=(2, 3)))

    def weights_from_descriptors(self, average_descriptor: Tensor, max_descriptor: Tensor) -> Tensor:
        """Channel weights from given (B, C) average- and max-pooled descriptors.

        Tiled inference over a large scene pools the descriptors over the whole scene first (a cheap
        reduction of per-tile sums and maxima) and passes them here, so every tile is rescaled exactly
        as whole-scene inference would rescale it.
        """
        # Outside bf16 autocast: a few hundred FLOPs, and the weights scale every feature of the scene.
        with torch.autocast(average_descriptor.device.type, enabled=False):
            average, maximum = average_descriptor.float(), max_descriptor.float()
            return torch.sigmoid(self.shared_mlp(average) + self.shared_mlp(maximum))

    def forward(self, features: Tensor) -> Tensor:
        """Rescale (B, C, H, W) features by their channel weights; returns the same shape."""
        return features * self.channel_weights(features)[:, :, None, None]


class SingleSceneClusterer(nn.Module):
    """The network of Table 1: ``depth`` x (3x3 conv -> ReLU -> BatchNorm), channel attention, 1x1 conv.

    The order ReLU-then-BatchNorm follows the paper's text ("processed through activation function
    (ReLU) ... and by Batch Normalization layer"), not the more common conv -> BN -> ReLU. All 3x3
    convolutions use stride 1 and zero padding 1, and there is no pooling, so the spatial size is kept.
    The final 1x1 convolution has no activation or normalisation after it: its output is the raw
    feature map y of the paper, whose per-pixel argmax is the cluster label.
    """

    def __init__(self, config: ClustererConfig) -> None:
        """Build the layers.

        Args:
            config: Architecture hyper-parameters.
        """
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.in_channels
        for _ in range(config.depth):
            layers += [
                nn.Conv2d(channels, config.width, kernel_size=3, stride=1, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(config.width),
            ]
            channels = config.width
        self.features = nn.Sequential(*layers)
        self.attention = ChannelAttention(config.width, config.attention_reduction)
        self.classifier = nn.Conv2d(config.width, config.num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Map normalised patches (B, in_channels, H, W) to raw cluster features y (B, K, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input of shape (batch, {self.config.in_channels}, rows, cols), "
                f"got {tuple(x.shape)}"
            )
        features = self.feature_maps(x)
        if self.training:
            logits: Tensor = self.classifier(self.attention(features))
            return logits
        return self._classify(features, self.attention.channel_weights(features))

    def feature_maps(self, x: Tensor) -> Tensor:
        """The convolution blocks' output (B, width, H, W): ``self.features(x)``, or under bf16 autocast
        on a CPU in eval mode the same layers fused (ReLU into each convolution, BatchNorm into the next;
        ``eo_models.clusterer.fused``), bfloat16 ``channels_last``."""
        if use_bf16_path(self, x):
            return bf16_features(self, x)
        features: Tensor = self.features(x)
        return features

    def forward_with_descriptors(
        self, x: Tensor, average_descriptor: Tensor, max_descriptor: Tensor
    ) -> Tensor:
        """Like ``forward``, but the channel attention uses the given pooled descriptors (B or 1, C)."""
        return self.classify_with_descriptors(self.feature_maps(x), average_descriptor, max_descriptor)

    def classify_with_descriptors(
        self, features: Tensor, average_descriptor: Tensor, max_descriptor: Tensor
    ) -> Tensor:
        """The layers after ``features`` (B, width, H, W), the attention weighted by given descriptors."""
        weights = self.attention.weights_from_descriptors(average_descriptor, max_descriptor)
        return self._classify(features, weights.expand(features.shape[0], -1))

    def _classify(self, features: Tensor, channel_weights: Tensor) -> Tensor:
        """Rescale ``features`` by the (B, C) attention weights, then the final 1x1 convolution.

        In eval mode both are one float64 1x1 convolution per sample, its weights scaled by that
        sample's channel weights (``W (w * f) = (W * w) f``, exact in real arithmetic): no rescaled copy
        of the features is made. float64 because a float32 1x1 convolution sums its 64 products in an
        order that depends on the number of CPU threads, so labels of near-tie pixels would depend on how
        many threads a Dask worker has; in float64 the argmax is the same for any thread count. The
        layer is under 0.3 % of the FLOPs. bfloat16 features on a CPU take the same float64 layer as a
        sliced matrix product (``eo_models.clusterer.fused.bf16_classify``).
        """
        if self.training:
            logits: Tensor = self.classifier(features * channel_weights[:, :, None, None])
            return logits
        if features.dtype == torch.bfloat16 and features.device.type == "cpu":
            bias = cast(Tensor, self.classifier.bias)
            return bf16_classify(features, self.classifier.weight, bias, channel_weights)
        bias = cast(Tensor, self.classifier.bias).double()  # built with bias=True
        weight = self.classifier.weight.double()
        with torch.autocast(features.device.type, enabled=False):  # float64 also under bf16 autocast
            return torch.cat(
                [
                    F.conv2d(features[b : b + 1].double(), weight * scale.double()[None, :, None, None], bias)
                    for b, scale in enumerate(channel_weights)
                ]
            )


def clusterer_parameter_count(
    in_channels: int,
    num_classes: int,
    width: int = 64,
    depth: int = 5,
    reduction: int = 16,
) -> int:
    """Number of trainable parameters that Table 1 implies (BatchNorm running statistics excluded).

    Args:
        in_channels: Number of input bands.
        num_classes: K.
        width: Kernels per 3x3 convolution.
        depth: Number of 3x3 convolutions.
        reduction: Channel attention reduction ratio.

    Returns:
        The sum of: the 3x3 convolutions' weights and biases, two affine parameters per BatchNorm
        channel, the attention MLP's two linear layers (with biases), and the 1x1 convolution.
    """
    first_convolution = (in_channels * 3 * 3 + 1) * width
    later_convolutions = (depth - 1) * (width * 3 * 3 + 1) * width
    batch_norms = depth * 2 * width
    hidden = attention_hidden_width(width, reduction)
    attention = (width + 1) * hidden + (hidden + 1) * width
    classifier = (width + 1) * num_classes
    return first_convolution + later_convolutions + batch_norms + attention + classifier
