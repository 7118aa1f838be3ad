"""DeepLabv3+ (Chen et al., ECCV 2018) with a ResNet-50 backbone, in plain PyTorch.

mCL-LC (Tang et al., WACV 2023, Sec. 3.1) splits this network into the encoder ``E`` (ResNet-50 at
output stride 16 followed by ASPP) and the decoder ``D`` (low-level fusion and two 3x3 convs). The
segmentation classifier sits on top of ``D`` and is only present once the number of classes is known
(fine-tuning and prediction); pre-training uses ``D``'s 256-channel output as the semantic map.

Layout follows the common ResNet DeepLabv3+ (torchvision's ASPP, smp's decoder): ASPP with a 1x1
branch, three 3x3 atrous branches (rates 6/12/18 at OS16) and image pooling, all 256 channels, fused
by a 1x1 conv; the decoder reduces ``layer1`` features to 48 channels, upsamples the ASPP output x4,
concatenates and applies two 3x3 convs of 256 channels. Plain (not depthwise-separable) convs are
used, as in the ResNet variants of DeepLabv3+; the Xception variant of the original paper uses
separable ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eo_models.mcl_lc.resnet import ResNet50Backbone

__all__ = [
    "ASPP",
    "DeepLabV3Plus",
    "DeepLabV3PlusDecoder",
    "EncodedFeatures",
    "build_mcl_lc_segmenter",
]

DEFAULT_ASPP_RATES = (6, 12, 18)
FEATURE_CHANNELS = 256
LOW_LEVEL_REDUCED_CHANNELS = 48


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _ImagePooling(nn.Module):
    """Global average pooling branch of ASPP, broadcast back to the input's size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = _conv_bn_relu(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.project(self.pool(x))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling.

    Args:
        in_channels: Channels of the backbone output (2048 for ResNet-50).
        rates: Dilation rates of the three 3x3 branches.
        out_channels: Channels of every branch and of the output.
        dropout: Dropout after the fusing 1x1 conv (0.5 in torchvision and smp).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        rates: Sequence[int] = DEFAULT_ASPP_RATES,
        out_channels: int = FEATURE_CHANNELS,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, dilation=rate) for rate in rates]
        branches.append(_ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(len(branches) * out_channels, out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (B, in_channels, h, w) to (B, out_channels, h, w)."""
        projected: torch.Tensor = self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
        return projected


class DeepLabV3PlusDecoder(nn.Module):
    """The decoder ``D``: fuses ASPP output with reduced ``layer1`` features at stride 4."""

    def __init__(self, *, low_level_channels: int = 256, channels: int = FEATURE_CHANNELS) -> None:
        """Builds the decoder.

        Args:
            low_level_channels: Channels of the backbone's ``layer1`` output.
            channels: Channels of the ASPP output and of the decoder output.
        """
        super().__init__()
        self.reduce_low_level = _conv_bn_relu(low_level_channels, LOW_LEVEL_REDUCED_CHANNELS, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(channels + LOW_LEVEL_REDUCED_CHANNELS, channels, 3),
            _conv_bn_relu(channels, channels, 3),
        )

    def forward(self, encoded: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        """Returns decoder features (B, channels, H/4, W/4) from ASPP and ``layer1`` outputs."""
        low_level = self.reduce_low_level(low_level)
        # "Upsample x4", written as a resize to the low-level size so odd input sizes also work.
        upsampled = F.interpolate(encoded, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        fused: torch.Tensor = self.fuse(torch.cat([upsampled, low_level], dim=1))
        return fused


@dataclass(frozen=True)
class EncodedFeatures:
    """Output of the encoder ``E``.

    Attributes:
        encoded: ASPP output ``E(p)``, (B, 256, H/16, W/16).
        low_level: Backbone ``layer1`` output, (B, 256, H/4, W/4), the decoder's skip input.
    """

    encoded: torch.Tensor
    low_level: torch.Tensor


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a ResNet-50 backbone and any number of input bands.

    Args:
        in_channels: Number of input bands.
        num_classes: Classes of the segmentation head; 0 builds the network without a head
            (pre-training), and :meth:`forward` then refuses to run.
        aspp_rates: Dilation rates of the ASPP branches.
        aspp_dropout: Dropout after ASPP fusion.
        output_stride: Backbone output stride, 16 (default, as in the paper) or 32.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 0,
        aspp_rates: Sequence[int] = DEFAULT_ASPP_RATES,
        aspp_dropout: float = 0.5,
        output_stride: int = 16,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.backbone = ResNet50Backbone(in_channels=in_channels, output_stride=output_stride)
        self.aspp = ASPP(self.backbone.high_level_channels, rates=aspp_rates, dropout=aspp_dropout)
        self.decoder = DeepLabV3PlusDecoder(low_level_channels=self.backbone.low_level_channels)
        self.classifier = nn.Conv2d(FEATURE_CHANNELS, num_classes, kernel_size=1) if num_classes else None

    def encode(self, x: torch.Tensor) -> EncodedFeatures:
        """The encoder ``E``: backbone and ASPP."""
        features = self.backbone(x)
        return EncodedFeatures(encoded=self.aspp(features.high_level), low_level=features.low_level)

    def decode(self, features: EncodedFeatures) -> torch.Tensor:
        """The decoder ``D``: semantic features (B, 256, H/4, W/4) before the classifier."""
        decoded: torch.Tensor = self.decoder(features.encoded, features.low_level)
        return decoded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segments ``x`` (B, in_channels, H, W) into logits (B, num_classes, H, W)."""
        if self.classifier is None:
            raise RuntimeError("this DeepLabV3Plus has no classifier (num_classes=0); fine-tune it first")
        logits = self.classifier(self.decode(self.encode(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def encoder_modules(self) -> list[nn.Module]:
        """Modules that make up ``E`` (frozen when fine-tuning only the decoder)."""
        return [self.backbone, self.aspp]


_SEGMENTER_CONFIG_KEYS = {"in_channels", "num_classes", "aspp_rates", "aspp_dropout", "output_stride"}


def build_mcl_lc_segmenter(model_config: Mapping[str, Any]) -> DeepLabV3Plus:
    """Builds the segmentation network of an mCL-LC checkpoint from its ``model_config``.

    The returned module maps (B, in_channels, H, W) to logits (B, num_classes, H, W); this is the
    builder the model registry uses for the ``"mcl-lc"`` family.

    Args:
        model_config: ``in_channels`` and ``num_classes`` (>= 1), optionally ``aspp_rates``,
            ``aspp_dropout`` and ``output_stride``.

    Returns:
        A freshly initialised :class:`DeepLabV3Plus`; load the checkpoint's ``state_dict`` into it.

    Raises:
        ValueError: For unknown keys, or a config without classes (a pre-training checkpoint).
    """
    unknown = set(model_config) - _SEGMENTER_CONFIG_KEYS
    if unknown:
        raise ValueError(
            f"unknown mCL-LC model_config keys {sorted(unknown)}; allowed: {sorted(_SEGMENTER_CONFIG_KEYS)}"
        )
    if int(model_config.get("num_classes", 0)) < 1:
        raise ValueError(
            "model_config has no classes: this is a pre-training checkpoint; run finetune_mcl_lc "
            "on it to get a checkpoint that can predict"
        )
    return DeepLabV3Plus(
        in_channels=int(model_config["in_channels"]),
        num_classes=int(model_config["num_classes"]),
        aspp_rates=tuple(int(r) for r in model_config.get("aspp_rates", DEFAULT_ASPP_RATES)),
        aspp_dropout=float(model_config.get("aspp_dropout", 0.5)),
        output_stride=int(model_config.get("output_stride", 16)),
    )
