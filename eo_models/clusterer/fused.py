"""The clusterer's bf16 inference path on a CPU: the same layers with fewer passes over the activations.

Under ``--precision bf16`` on a CPU (eval mode only), :func:`bf16_features` computes what
``SingleSceneClusterer.features`` (five x conv3x3 -> ReLU -> BatchNorm) computes, and
:func:`bf16_classify` the float64 final layer, in fewer passes over the (N, 64, H, W) activations:

* **ReLU fused into each convolution** (oneDNN post-op, ``torch.ops.mkldnn._convolution_pointwise``,
  bfloat16 weights and activations in ``channels_last``, float32 bias) instead of a separate pass.
* **BatchNorm folded into the next convolution.** Eval-mode BatchNorm after ReLU is the per-channel
  affine map ``z = s r + t`` (``s = gamma / sqrt(var + eps)``, ``t = beta - s mean``), so
  ``conv_W(z) = conv_{W diag(s)}(r) + W t`` wherever every tap of the 3x3 window is inside the block
  (exact in real arithmetic). On the block's outer ring of pixels the convolution's zero padding sits
  outside the affine map (``z`` is padded with 0, not ``r``), so that ring is recomputed from two-pixel
  strips in the unfolded form and overwritten: the result is the unfolded layer stack everywhere, up to
  bfloat16 rounding. The last BatchNorm stays a separate pass (the scene-context pass pools its output).
* **The float64 final layer as a matrix product** on the ``channels_last`` features viewed as
  (pixels, 64), converted to float64 in slices of rows instead of one float64 copy of the whole map.

Labels stay independent of thread counts, worker counts and chunkings: every step computes each pixel
from its own 3x3 neighbourhood or its own 64 features in an order that does not depend on the number
of threads, and the final layer stays float64. bf16 labels differ from the autocast path's (and from
fp32) on near-tie pixels only (rounding); fp32 inference does not use this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from eo_models.clusterer.model import SingleSceneClusterer

__all__ = ["bf16_classify", "bf16_features", "bf16_moments", "use_bf16_path"]

#: Pixels of the float64 final layer and of the pooled sums computed per slice (a few MiB of float64).
CLASSIFY_ROWS = 16384


def use_bf16_path(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model(x)`` may take this path: eval mode, CPU, bf16 autocast on, 3 x 3 px or more."""
    return (
        not model.training
        and x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and x.shape[-1] >= 3
        and x.shape[-2] >= 3
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _affine(norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``(s, t)`` (C,) float32 each: ``norm(r) = s r + t`` per channel."""
    mean, var = cast(Tensor, norm.running_mean).float(), cast(Tensor, norm.running_var).float()
    gamma, beta = norm.weight.float(), norm.bias.float()
    scale = gamma / torch.sqrt(var + norm.eps)
    return scale, beta - scale * mean


def _conv_relu(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``relu(conv3x3(h, weight) + bias)`` in one oneDNN call; bf16 channels_last in and out."""
    weight = weight.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    pointwise = torch.ops.mkldnn._convolution_pointwise
    out: Tensor = pointwise(h, weight, bias.float(), [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
    return out


def _fix_ring(out: Tensor, previous: Tensor, norm: nn.BatchNorm2d, conv: nn.Conv2d) -> None:
    """Overwrite ``out``'s outer ring with the unfolded layer ``relu(conv(pad0(norm(previous))))``.

    Each side is computed from the two rows (columns) of ``previous`` nearest it, so its zero padding
    is the block's own; the ring's other neighbours are inside those strips.
    """
    weight = conv.weight.to(torch.bfloat16)
    bias = cast(Tensor, conv.bias).to(torch.bfloat16)

    def side(strip: Tensor) -> Tensor:
        normalised = F.batch_norm(
            strip.float(), norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
        ).to(torch.bfloat16)
        return F.conv2d(normalised, weight, bias, padding=1).relu_()

    out[:, :, :1, :] = side(previous[:, :, :2, :])[:, :, :1, :]
    out[:, :, -1:, :] = side(previous[:, :, -2:, :])[:, :, -1:, :]
    out[:, :, :, :1] = side(previous[:, :, :, :2])[:, :, :, :1]
    out[:, :, :, -1:] = side(previous[:, :, :, -2:])[:, :, :, -1:]


def bf16_features(model: SingleSceneClusterer, x: Tensor) -> Tensor:
    """``model.features(x)`` (N, width, H, W) in bfloat16 ``channels_last``, by the fused path above.

    Call under ``torch.inference_mode()`` (or ``no_grad``), when :func:`use_bf16_path` holds.
    """
    layers = list(model.features)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    norms = [m for m in layers if isinstance(m, nn.BatchNorm2d)]
    with torch.autocast("cpu", enabled=False):
        h = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        previous_norm: nn.BatchNorm2d | None = None
        for conv, norm in zip(convs, norms, strict=True):
            weight, bias = conv.weight.float(), cast(Tensor, conv.bias).float()
            if previous_norm is None:
                h = _conv_relu(h, weight, bias)
            else:  # conv(s r + t) = conv_{W s}(r) + W t inside; the ring recomputed unfolded
                scale, shift = _affine(previous_norm)
                folded = _conv_relu(h, weight * scale[None, :, None, None], bias + weight.sum((2, 3)) @ shift)
                _fix_ring(folded, h, previous_norm, conv)
                h = folded
            previous_norm = norm
        last = cast(nn.BatchNorm2d, previous_norm)
        features: Tensor = F.batch_norm(
            h, last.running_mean, last.running_var, last.weight, last.bias, False, 0.0, last.eps
        )
        return features.contiguous(memory_format=torch.channels_last)


def bf16_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Sum (C,) float64 and max (C,) float32 over every pixel of bf16 ``channels_last`` (C, H, W) features.

    The sum is taken in float64 slice by slice (no float64 copy of the whole map): sums of bfloat16
    values (8 significant bits) are exact in float64 for any realistic map, so the result does not
    depend on the order of summation, hence not on thread counts or slicing.
    """
    c = features.shape[0]
    pixels = features.permute(1, 2, 0).reshape(-1, c)  # a view for channels_last features, else a copy
    total = torch.zeros(c, dtype=torch.float64, device=features.device)
    with torch.autocast("cpu", enabled=False):
        for start in range(0, pixels.shape[0], CLASSIFY_ROWS):
            total += pixels[start : start + CLASSIFY_ROWS].double().sum(dim=0)
        return total, pixels.amax(dim=0).float()


def bf16_classify(features: Tensor, weight: Tensor, bias: Tensor, channel_weights: Tensor) -> Tensor:
    """The float64 final 1x1 layer of bf16 ``channels_last`` features: logits (N, K, H, W) float64.

    Args:
        features: (N, C, H, W) bfloat16, ``channels_last``.
        weight: (K, C, 1, 1) the classifier's weights.
        bias: (K,) its bias.
        channel_weights: (N, C) the attention's weights; ``W (w * f) = (W * w) f``.

    Returns:
        float64 (N, K, H, W) logits (a permuted view of (N, H, W, K) memory).
    """
    n, c, h, w = features.shape
    pixels = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
    kernel = weight.double().reshape(weight.shape[0], c)
    out = torch.empty(n, h * w, kernel.shape[0], dtype=torch.float64, device=features.device)
    with torch.autocast("cpu", enabled=False):
        for b in range(n):
            scaled = (kernel * channel_weights[b].double()[None, :]).T.contiguous()
            for start in range(0, h * w, CLASSIFY_ROWS):
                stop = start + CLASSIFY_ROWS
                torch.addmm(bias.double(), pixels[b, start:stop].double(), scaled, out=out[b, start:stop])
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)
