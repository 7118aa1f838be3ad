"""Inference from a checkpoint: raw pixel blocks in, uint8 cluster/class labels out.

Implements the prediction contract of ``docs/interfaces.md`` for every family in
``eo_models.registry.MODEL_BUILDERS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from eo_models.checkpoint import CheckpointError, load_checkpoint, validate_checkpoint
from eo_models.registry import MODEL_BUILDERS

__all__ = ["Predictor", "load_predictor", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """A trained model in eval mode plus the normalisation it was trained with.

    Attributes:
        family: Model family name, a key of ``MODEL_BUILDERS``.
        num_classes: Labels are in ``[0, num_classes)``.
        in_channels: Number of bands a block must have.
        halo: Pixels of context each side that the caller should read around a tile.
        device: Where the forward pass runs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        family: str,
        num_classes: int,
        in_channels: int,
        halo: int,
        band_mean: Sequence[float],
        band_std: Sequence[float],
        device: torch.device,
    ) -> None:
        """Wrap a model; prefer ``load_predictor``, which builds everything from a checkpoint."""
        if len(band_mean) != in_channels or len(band_std) != in_channels:
            raise ValueError(
                f"band statistics have {len(band_mean)} means and {len(band_std)} stds for {in_channels} bands"
            )
        self.family = family
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.halo = halo
        self.device = device
        self.model = model.to(device).eval()
        self._band_mean = torch.tensor(band_mean, dtype=torch.float32, device=device)[:, None, None]
        self._band_std = torch.tensor(band_std, dtype=torch.float32, device=device)[:, None, None]

    def predict(self, block: np.ndarray, valid: np.ndarray | None = None, *, descriptors=None) -> np.ndarray:
        """Label every pixel of one block.

        Args:
            block: Raw pixel values, shape (bands, rows, cols), any real numeric dtype.
            valid: Optional bool mask (rows, cols); False marks nodata pixels. They (and any NaN or
                infinite value) are set to 0 after normalisation, i.e. to the band mean, so they
                cannot spread NaN through the convolutions and the attention's global pooling. Their
                labels are meaningless; the caller writes nodata over them.

        Returns:
            uint8 labels of shape (rows, cols) in ``[0, num_classes)``.

        Raises:
            ValueError: If the shape or band count is wrong.
            TypeError: If the dtype is not numeric.
        """
        block = np.asarray(block)
        if block.ndim != 3:
            raise ValueError(f"block must have shape (bands, rows, cols), got shape {block.shape}")
        if valid is not None:
            valid = np.asarray(valid)[None]
        return self.predict_batch(block[None], valid, descriptors=descriptors)[0]

    def predict_batch(self, blocks: np.ndarray, valid: np.ndarray | None = None, *, descriptors=None) -> np.ndarray:
        """Label several same-size blocks in one forward pass.

        Each block is still processed independently of the others (eval-mode BatchNorm uses running
        statistics and the attention pools per block), so batching only changes speed.

        Args:
            blocks: Raw pixel values, shape (N, bands, rows, cols), any real numeric dtype.
            valid: Optional bool mask (N, rows, cols); see ``predict``.
            descriptors: Optional ``(average, max)`` channel descriptors (C,) pooled over a whole
                scene (see ``attention_moments``); the model then uses them instead of pooling over
                each block, so tiled inference equals whole-scene inference.

        Returns:
            uint8 labels of shape (N, rows, cols).

        Raises:
            ValueError: If the shape or band count is wrong.
            TypeError: If the dtype is not numeric.
        """
        blocks = np.asarray(blocks)
        if blocks.ndim != 4:
            raise ValueError(f"blocks must have shape (N, bands, rows, cols), got shape {blocks.shape}")
        if blocks.shape[1] != self.in_channels:
            raise ValueError(
                f"the {self.family} model expects {self.in_channels} bands (in_channels), "
                f"got a block with {blocks.shape[1]} bands; check the band selection of the input scene"
            )
        if not (np.issubdtype(blocks.dtype, np.number) or blocks.dtype == np.bool_) or np.iscomplexobj(blocks):
            raise TypeError(f"block dtype must be real numeric, got {blocks.dtype}")
        expected_mask_shape = (blocks.shape[0], *blocks.shape[2:])
        if valid is not None and np.shape(valid) != expected_mask_shape:
            raise ValueError(f"valid mask must have shape {expected_mask_shape}, got {np.shape(valid)}")

        with torch.inference_mode():
            normalised = self._normalise(blocks, valid)
            if descriptors is not None:
                average, maximum = (torch.as_tensor(np.asarray(d, np.float32), device=self.device)[None]
                                    for d in descriptors)
                outputs = self.model.forward_with_descriptors(normalised, average, maximum)
            else:
                outputs = self.model(normalised)
            return outputs.argmax(dim=1).to(torch.uint8).cpu().numpy()

    def _normalise(self, blocks: np.ndarray, valid: np.ndarray | None) -> torch.Tensor:
        # Cast before normalising so that integer scenes (uint8, uint16) and float64 scenes all
        # follow the same float32 arithmetic as the training patches.
        pixels = torch.from_numpy(np.ascontiguousarray(blocks, dtype=np.float32)).to(self.device)
        normalised = (pixels - self._band_mean) / self._band_std
        keep = torch.isfinite(normalised)
        if valid is not None:
            mask = torch.from_numpy(np.ascontiguousarray(valid, dtype=np.bool_)).to(self.device)
            keep &= mask[:, None]
        return torch.where(keep, normalised, torch.zeros((), device=self.device))

    @property
    def supports_scene_pooling(self) -> bool:
        """Whether the model's global pooling can be computed over a whole scene, tile by tile."""
        return hasattr(self.model, "forward_with_descriptors")

    def attention_moments(self, block: np.ndarray, valid: np.ndarray | None, inner: tuple[slice, slice]):
        """Sum and maximum over the ``inner`` pixels of the features that the channel attention pools.

        Summed over the tiles of a scene (each tile read with a halo at least the convolutions'
        radius, ``inner`` its own pixels), these give exactly the whole-scene average and max
        descriptors. Returns ``(sum (C,), pixel count, max (C,))`` as float64/int.
        """
        if not self.supports_scene_pooling:
            raise ValueError(f"the {self.family} model has no channel attention to pool over a scene")
        with torch.inference_mode():
            features = self.model.features(self._normalise(np.asarray(block)[None],
                                                           None if valid is None else np.asarray(valid)[None]))
            kept = features[0][:, inner[0], inner[1]]
            # float64 accumulation: a float32 sum's rounding depends on torch's thread count, which
            # differs between Dask workers and this process; the labels must not.
            return (kept.double().sum(dim=(1, 2)).cpu().numpy(), int(kept.shape[1] * kept.shape[2]),
                    kept.amax(dim=(1, 2)).double().cpu().numpy())


def load_predictor(
    path_or_ckpt: str | os.PathLike[str] | Mapping[str, Any],
    device: str | torch.device | None = None,
) -> Predictor:
    """Build a ``Predictor`` from a checkpoint file or an already loaded checkpoint dict.

    Args:
        path_or_ckpt: Local ``.pt`` path, or the dict ``load_checkpoint`` / a training loop returns.
        device: ``None`` or ``"auto"`` for CUDA when available, else e.g. ``"cpu"``, ``"cuda:1"``.

    Returns:
        The predictor, its model in eval mode on ``device``.

    Raises:
        CheckpointError: If the checkpoint's family is unknown, or its weights do not fit the model
            its ``model_config`` describes.
    """
    if isinstance(path_or_ckpt, Mapping):
        ckpt = path_or_ckpt
        source = "checkpoint dict"
        validate_checkpoint(ckpt, source=source)
    else:
        ckpt = load_checkpoint(path_or_ckpt)
        source = str(path_or_ckpt)
    family_name = ckpt["family"]
    if family_name not in MODEL_BUILDERS:
        raise CheckpointError(
            f"{source}: unknown model family {family_name!r}; known families: {sorted(MODEL_BUILDERS)}"
        )
    family = MODEL_BUILDERS[family_name]
    model = family.build(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{source}: its weights do not fit the {family_name} model described by its model_config: {error}"
        ) from error
    in_channels = int(ckpt["model_config"].get("in_channels", len(ckpt["band_mean"])))
    if len(ckpt["band_mean"]) != in_channels:
        raise CheckpointError(
            f"{source}: model_config says {in_channels} input bands but band_mean has {len(ckpt['band_mean'])}"
        )
    return Predictor(
        model,
        family=family_name,
        num_classes=int(ckpt["num_classes"]),
        in_channels=in_channels,
        halo=family.halo,
        band_mean=[float(value) for value in ckpt["band_mean"]],
        band_std=[float(value) for value in ckpt["band_std"]],
        device=resolve_device(device),
    )
