"""Sliding-window inference of the fine-tuned DeepLabv3+, so labels do not depend on the chunk size.

DeepLabv3+'s image-pooling branch (ASPP) averages over its whole input, so one forward pass over a
1024 px chunk and over a 256 px chunk give different logits for the same pixel (whole chunks were
once predicted "building" at 99 % against 12-20 % for 64 px patches). As mmsegmentation's ``slide``
inference does (``EncoderDecoder.slide_inference``), the network therefore only ever sees windows of
the size it was trained on: windows of ``window`` px every ``stride`` px, their logits summed per
pixel and divided by the number of windows covering it, then the argmax.

Seamless under tiling: windows start at multiples of ``stride`` from the block's origin, and the last
window of a row or column reaches past the block's end, padded with zeros (the band mean after
normalisation) rather than shifted back as mmsegmentation does, so every window sits on one grid
anchored at the scene's origin. When the predict stage's chunk size and halo are multiples of
``stride`` and the halo is at least ``window - stride`` (:func:`sliding_halo`), every window that
covers a kept pixel of a chunk is a window of the whole-scene grid with the same pixels, and the
chunk's labels equal those of one sliding pass over the whole scene. Windows are run in batches of a
fixed size (the last one padded with empty windows) and summed in float64 in one order, so the
arithmetic is the same whatever the chunk size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SlidingWindow", "SlidingWindowSegmenter", "inference_window", "sliding_halo"]

DEFAULT_WINDOW = 256
"""Window when a checkpoint records no patch size (the paper's 256 px patches)."""


@dataclass(frozen=True)
class SlidingWindow:
    """Window and stride of sliding inference, in pixels (``0 < stride <= window``)."""

    window: int
    stride: int

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.window:
            raise ValueError(
                f"sliding inference needs 0 < stride <= window, got {self.stride} and {self.window}"
            )

    @property
    def halo(self) -> int:
        """Context a chunk needs for seamless tiling: ``window - stride`` (see the module docstring)."""
        return self.window - self.stride


def inference_window(ckpt: Mapping[str, Any]) -> SlidingWindow:
    """The sliding window of a fine-tuned checkpoint.

    ``extra["inference_window"]`` / ``extra["inference_stride"]`` when set (a configured window),
    else the fine-tuning patch size (``train_params["patch_size"]``), else the pre-training one,
    else :data:`DEFAULT_WINDOW`; the stride defaults to half the window (mmsegmentation's usual
    overlap).
    """
    extra = ckpt.get("extra") or {}
    train_params = ckpt.get("train_params") or {}
    pretrain = train_params.get("pretrain") or {}
    window = int(
        extra.get("inference_window")
        or train_params.get("patch_size")
        or pretrain.get("patch_size")
        or DEFAULT_WINDOW
    )
    stride = int(extra.get("inference_stride") or max(1, window // 2))
    return SlidingWindow(window, stride)


def sliding_halo(ckpt: Mapping[str, Any]) -> int:
    """The predict-stage halo of a fine-tuned checkpoint: ``window - stride`` of its sliding window."""
    return inference_window(ckpt).halo


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts ``0, stride, ...`` up to the first window that reaches ``length``."""
    starts = [0]
    while starts[-1] + window < length:
        starts.append(starts[-1] + stride)
    return starts


class SlidingWindowSegmenter(nn.Module):
    """A segmentation network applied in overlapping windows, logits averaged before the argmax.

    Args:
        network: Maps (B, C, window, window) to logits (B, K, window, window).
        sliding: Window and stride.
        batch_size: Windows per forward pass (every pass has exactly this many; the last is padded).
    """

    def __init__(self, network: nn.Module, sliding: SlidingWindow, *, batch_size: int = 8) -> None:
        super().__init__()
        self.network = network
        self.sliding = sliding
        self.batch_size = batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Averaged logits (N, K, H, W), float64, of normalised images ``x`` (N, C, H, W)."""
        window, stride = self.sliding.window, self.sliding.stride
        count, _channels, height, width = x.shape
        rows, cols = _starts(height, window, stride), _starts(width, window, stride)
        padded = F.pad(x, (0, cols[-1] + window - width, 0, rows[-1] + window - height))
        places = [(image, row, col) for image in range(count) for row in rows for col in cols]
        total: torch.Tensor | None = None
        for first in range(0, len(places), self.batch_size):
            batch = places[first : first + self.batch_size]
            windows = torch.stack([padded[i, :, r : r + window, c : c + window] for i, r, c in batch])
            if len(batch) < self.batch_size:  # same batch size on every call: same arithmetic
                windows = F.pad(windows, (0, 0, 0, 0, 0, 0, 0, self.batch_size - len(batch)))
            logits = self.network(windows).double()
            if total is None:
                total = logits.new_zeros((count, logits.shape[1], padded.shape[-2], padded.shape[-1]))
            for (image, row, col), window_logits in zip(batch, logits, strict=False):
                total[image, :, row : row + window, col : col + window] += window_logits
        assert total is not None
        covered = torch.zeros(padded.shape[-2:], dtype=torch.float64, device=x.device)
        for row in rows:
            for col in cols:
                covered[row : row + window, col : col + window] += 1
        return (total / covered)[..., :height, :width]
