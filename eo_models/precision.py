"""Arithmetic precision of training and inference, decided in one place.

``"fp32"`` runs every layer in float32 (contiguous NCHW tensors). ``"bf16"`` runs the model under
``torch.autocast(dtype=torch.bfloat16)`` with ``channels_last`` tensors: convolutions and matrix
products in bfloat16 with float32 accumulation, on the CPU's AMX / AVX512-BF16 units through oneDNN or
on a GPU's tensor cores. ``"auto"`` picks bf16 where the hardware does it natively (a CPU with AMX or
AVX512-BF16; a CUDA device for which ``torch.cuda.is_bf16_supported()``), else fp32, for training and
inference alike (see :func:`resolve_precision`). Measured on a
2-core Xeon with AMX: the clusterer's layers ran ~3.5x faster in bf16 + channels_last than in fp32
with 99.99 % of argmax labels unchanged (benchmarks/results/clusterer_speed.md).

Reproducibility: the reductions the labels depend on stay out of bfloat16 (the clusterer's scene
descriptors are summed in float64 and its last layer runs in float64 at inference), so labels remain
identical across thread counts, worker counts and chunkings *for a given precision*; bf16 and fp32
labels differ on near-tie pixels.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import torch

from eo_models.params import PRECISION_DESCRIPTION

__all__ = [
    "PRECISION_CHOICES",
    "PRECISION_DESCRIPTION",
    "Precision",
    "autocast",
    "cpu_has_native_bf16",
    "prepare_model",
    "resolve_precision",
    "to_memory_format",
]

Precision = Literal["fp32", "bf16"]
PRECISION_CHOICES = ("auto", "fp32", "bf16")

logger = logging.getLogger("eoseg.precision")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (Intel AMX or AVX512-BF16).

    Read from torch's own CPU capability checks (``torch.cpu._is_amx_tile_supported``,
    ``torch.cpu._is_avx512_bf16_supported``); False where this torch lacks them.
    """
    import torch.cpu

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device, *, training: bool = False) -> Precision:
    """The precision to run at on ``device``: ``precision`` itself, or the choice for ``"auto"``.

    ``"auto"`` is bf16 where the hardware computes it natively (AMX / AVX512-BF16 CPU, bf16-capable
    GPU), for training as for inference: on a 2-core AMX Xeon the clusterer's training ran 2.65x
    faster in bf16 than in fp32 at load 0.6-1.6 and 2.3x at load 3 (benchmarks/results/training.md),
    and bf16 training left the LoveDA map quality within the seed spread
    (benchmarks/results/quality.md). Under heavy contention
    from other processes bf16 loops can lose that lead; ``--precision fp32`` trains in fp32 on request.

    Args:
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
        device: Where the model runs.
        training: Whether the model is trained rather than run for inference (logged; the choice is
            the same since bf16 training was measured faster and no worse on an idle AMX CPU).

    Returns:
        ``"fp32"`` or ``"bf16"``, logged at INFO (with the reason for ``"auto"``'s choice).

    Raises:
        ValueError: For any other ``precision``.
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        logger.info("precision %s (as given) on %s", precision, device)
        return "bf16" if precision == "bf16" else "fp32"
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        reason = "the GPU supports bf16" if native else "the GPU lacks bf16"
    else:
        native = device.type == "cpu" and cpu_has_native_bf16()
        reason = "the CPU has AMX/AVX512-BF16" if native else f"no native bf16 on {device.type}"
    chosen: Precision = "bf16" if native else "fp32"
    logger.info("precision auto -> %s for %s (%s)", chosen, "training" if training else "inference", reason)
    return chosen


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` to bfloat16 on ``device`` for ``"bf16"``; nothing for ``"fp32"``."""
    if precision != "bf16":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def to_memory_format(tensor: torch.Tensor, precision: Precision) -> torch.Tensor:
    """A 4-D tensor in ``channels_last`` for ``"bf16"`` (oneDNN's fast layout), unchanged for fp32."""
    if precision == "bf16" and tensor.ndim == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def prepare_model(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """``model`` with its 4-D weights in ``channels_last`` for ``"bf16"``; unchanged for fp32 (in place)."""
    if precision == "bf16":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    return model
