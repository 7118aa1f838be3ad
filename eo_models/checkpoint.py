"""The one checkpoint format shared by every model family (see ``docs/interfaces.md``).

A checkpoint is a dict of tensors and plain Python containers saved with ``torch.save``, so that it
loads with ``torch.load(..., weights_only=True)``: loading never runs code from the file.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "validate_checkpoint",
]

FORMAT_VERSION = 1

REQUIRED_KEYS: tuple[str, ...] = (
    "format_version",
    "family",
    "model_config",
    "band_mean",
    "band_std",
    "num_classes",
    "train_params",
    "history",
    "state_dict",
    "extra",
)

# What torch's weights-only unpickler accepts without an allow-list (besides tensors).
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint file or dict is unreadable or does not follow the checkpoint format."""


def validate_checkpoint(ckpt: Mapping[str, Any], *, source: str = "checkpoint") -> None:
    """Check that a checkpoint dict follows the format, before it is written or used.

    Args:
        ckpt: The checkpoint dict.
        source: How to name the checkpoint in error messages (e.g. its path).

    Raises:
        CheckpointError: Naming the first problem found.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(ckpt).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{source}: missing required keys {missing}")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format_version is {ckpt['format_version']!r}, this code reads version "
            f"{FORMAT_VERSION}; retrain the model or use the eoseg release that wrote it"
        )
    if not isinstance(ckpt["family"], str):
        raise CheckpointError(f"{source}: 'family' must be a str, got {ckpt['family']!r}")
    for key in ("model_config", "train_params", "history", "extra", "state_dict"):
        if not isinstance(ckpt[key], Mapping):
            raise CheckpointError(f"{source}: {key!r} must be a dict, got {type(ckpt[key]).__name__}")
    non_tensors = [name for name, value in ckpt["state_dict"].items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f"{source}: state_dict entries that are not tensors: {non_tensors[:5]}")
    band_mean, band_std = ckpt["band_mean"], ckpt["band_std"]
    if not isinstance(band_mean, list) or not isinstance(band_std, list) or len(band_mean) != len(band_std):
        raise CheckpointError(f"{source}: 'band_mean' and 'band_std' must be lists of equal length")
    if not all(_is_finite_number(value) for value in band_mean):
        raise CheckpointError(f"{source}: every 'band_mean' value must be a finite number, got {band_mean}")
    if not all(_is_finite_number(value) and value > 0 for value in band_std):
        raise CheckpointError(
            f"{source}: every 'band_std' value must be a positive finite number, got {band_std}"
        )
    num_classes = ckpt["num_classes"]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= 256:
        raise CheckpointError(
            f"{source}: 'num_classes' must be an int in [1, 256] (labels are uint8), got {num_classes!r}"
        )


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything that ``torch.load(weights_only=True)`` would refuse, naming where it is."""
    if isinstance(value, (torch.Tensor, *_PLAIN_SCALARS)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"checkpoint key {key!r} at {where} must be a str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise CheckpointError(
        f"checkpoint value at {where} has type {type(value).__name__}; only tensors, str, int, float, "
        "bool, None, list, tuple and dict load with weights_only=True "
        "(convert numpy values with float()/.tolist())"
    )


def save_checkpoint(path: str | os.PathLike[str], ckpt: Mapping[str, Any]) -> None:
    """Validate a checkpoint and write it atomically, replacing any file already at ``path``.

    The dict is written to a temporary file in the destination directory and then moved into place
    with ``os.replace``, so a reader never sees a half-written checkpoint even if the writer dies.

    Args:
        path: Destination ``.pt`` file; its directory is created if needed.
        ckpt: Checkpoint dict following ``docs/interfaces.md``.

    Raises:
        CheckpointError: If the dict does not follow the format or holds non-plain values.
    """
    destination = Path(path)
    validate_checkpoint(ckpt, source=str(destination))
    _check_plain(dict(ckpt), "ckpt")
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as temporary_file:
            torch.save(dict(ckpt), temporary_file)
            temporary_file.flush()
            os.fsync(temporary_file.fileno())
        os.replace(temporary_name, destination)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a checkpoint with ``weights_only=True``, tensors on the CPU.

    Args:
        path: Local ``.pt`` file.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        CheckpointError: If the file cannot be unpickled safely or does not follow the format.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint {source} does not exist; train a model first or check the path")
    try:
        ckpt: dict[str, Any] = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types (UnpicklingError, RuntimeError, EOFError)
        raise CheckpointError(
            f"{source} cannot be loaded as an eoseg checkpoint with weights_only=True ({error}); "
            "it may be truncated or written by other software: write it again with "
            "eo_models.checkpoint.save_checkpoint (e.g. by re-running training)"
        ) from error
    validate_checkpoint(ckpt, source=str(source))
    return ckpt
