"""ResNet-50 backbone for DeepLabv3+, in plain PyTorch.

The module and parameter names follow torchvision's ``resnet50`` (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, ``downsample.0/1``), so a torchvision-layout ``state_dict`` loads with at most a prefix
strip. The classification head (``avgpool``/``fc``) is left out: segmentation only needs the feature
maps. Strides follow torchvision ("ResNet v1.5": the stride of a bottleneck sits on its 3x3 conv).

For an output stride of 16, as DeepLabv3+ uses, ``layer4`` keeps stride 1 and dilates its 3x3 convs by
2 instead (torchvision's ``replace_stride_with_dilation=[False, False, True]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BackboneFeatures",
    "Bottleneck",
    "ResNet50Backbone",
    "adapt_first_conv_weight",
    "load_resnet50_weights",
]

# Prefixes that common checkpoints put in front of torchvision's names.
_KNOWN_PREFIXES = ("module.", "backbone.", "encoder.", "model.")


@dataclass(frozen=True)
class BackboneFeatures:
    """Feature maps the DeepLabv3+ head needs from the backbone.

    Attributes:
        low_level: ``layer1`` output, 256 channels at stride 4.
        high_level: ``layer4`` output, 2048 channels at stride 16 (or 32 without dilation).
    """

    low_level: torch.Tensor
    high_level: torch.Tensor


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 reduce, 3x3 (strided/dilated), 1x1 expand, identity shortcut."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        """Builds the block.

        Args:
            in_channels: Channels of the block input.
            width: Channels inside the block; the output has ``4 * width``.
            stride: Stride of the 3x3 conv.
            dilation: Dilation (and padding) of the 3x3 conv.
            downsample: Projection for the shortcut when shape changes, else ``None``.
        """
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block to ``x`` of shape (B, in_channels, H, W)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        activated: torch.Tensor = self.relu(out + identity)
        return activated


class ResNet50Backbone(nn.Module):
    """ResNet-50 feature extractor returning ``layer1`` and ``layer4`` features.

    Args:
        in_channels: Number of input bands; only ``conv1`` depends on it.
        output_stride: 16 (``layer4`` dilated, the DeepLabv3+ setting) or 32 (plain ResNet-50).
    """

    def __init__(self, *, in_channels: int = 3, output_stride: int = 16) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
        self.in_channels = in_channels
        self.output_stride = output_stride
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._channels = 64
        self._dilation = 1
        self.layer1 = self._make_layer(64, blocks=3, stride=1)
        self.layer2 = self._make_layer(128, blocks=4, stride=2)
        self.layer3 = self._make_layer(256, blocks=6, stride=2)
        self.layer4 = self._make_layer(512, blocks=3, stride=2, dilate=output_stride == 16)
        self._init_weights()

    @property
    def low_level_channels(self) -> int:
        """Channels of the ``layer1`` feature map."""
        return 256

    @property
    def high_level_channels(self) -> int:
        """Channels of the ``layer4`` feature map."""
        return 2048

    def _make_layer(self, width: int, *, blocks: int, stride: int, dilate: bool = False) -> nn.Sequential:
        # Same rule as torchvision: a dilated stage's first block keeps the previous dilation and
        # the later blocks use the new one, so the receptive field grows as with the stride.
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_channels = width * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [
            Bottleneck(
                self._channels, width, stride=stride, dilation=previous_dilation, downsample=downsample
            )
        ]
        self._channels = out_channels
        for _ in range(1, blocks):
            layers.append(Bottleneck(self._channels, width, dilation=self._dilation))
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's default initialisation (He-normal fan-out convs, unit BN).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """Computes the features of ``x`` of shape (B, in_channels, H, W)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        high_level = self.layer4(self.layer3(self.layer2(low_level)))
        return BackboneFeatures(low_level=low_level, high_level=high_level)


def adapt_first_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapts a ``conv1`` weight trained on some band count to ``in_channels`` bands.

    Follows timm's ``adapt_input_conv``: for one band the RGB filters are summed (a grey image then
    gives the response the RGB image of the same brightness gave); for more bands the filters are
    repeated cyclically and scaled by ``old / new`` so that the expected activation stays the same.

    Args:
        weight: Tensor (out, old_bands, kh, kw).
        in_channels: Target band count.

    Returns:
        Tensor (out, in_channels, kh, kw).
    """
    old_bands = weight.shape[1]
    if in_channels == old_bands:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // old_bands)
    adapted = weight.repeat(1, repeats, 1, 1)[:, :in_channels]
    return adapted * (old_bands / in_channels)


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in _KNOWN_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    changed = True
        stripped[name] = value
    return stripped


def load_resnet50_weights(
    backbone: ResNet50Backbone, weights: str | Path | Mapping[str, torch.Tensor]
) -> list[str]:
    """Loads a local torchvision-layout ResNet-50 ``state_dict`` into ``backbone``.

    No download happens: ``weights`` is a path to a file saved with ``torch.save(state_dict)`` or an
    already loaded mapping. The classifier (``fc.*``) is ignored, prefixes such as ``module.`` or
    ``backbone.`` are stripped, and a ``conv1`` weight with another band count is adapted with
    :func:`adapt_first_conv_weight`.

    Args:
        backbone: The backbone to fill in place.
        weights: Path or mapping of parameter names to tensors.

    Returns:
        Names of backbone parameters/buffers the file did not provide (empty on a full match).

    Raises:
        ValueError: When a tensor has a shape that cannot be adapted; the message names the key.
    """
    state_dict: Mapping[str, torch.Tensor]
    if isinstance(weights, (str, Path)):
        loaded = torch.load(Path(weights), map_location="cpu", weights_only=True)
        if isinstance(loaded, Mapping) and "state_dict" in loaded:
            loaded = loaded["state_dict"]
        state_dict = loaded
    else:
        state_dict = weights
    source = {k: v for k, v in _strip_prefixes(state_dict).items() if not k.startswith("fc.")}
    if "conv1.weight" in source:
        source["conv1.weight"] = adapt_first_conv_weight(source["conv1.weight"], backbone.in_channels)
    target = backbone.state_dict()
    for key, value in source.items():
        if key in target and target[key].shape != value.shape:
            raise ValueError(
                f"weights for {key!r} have shape {tuple(value.shape)}, the backbone expects "
                f"{tuple(target[key].shape)}; is this a ResNet-50 state_dict?"
            )
    usable = {k: v for k, v in source.items() if k in target}
    if not usable:
        raise ValueError("no key of the weights matches a ResNet-50 backbone parameter")
    result = backbone.load_state_dict(usable, strict=False)
    return list(result.missing_keys)
