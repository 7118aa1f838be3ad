"""Inference from a checkpoint: raw pixel blocks in, uint8 cluster/class labels out.

Implements the prediction contract of ``docs/interfaces.md`` for every registered model family
(:mod:`eo_models.family`); the family's optional scene-wide context pass is exposed as
``context_partial`` / ``combine_context`` and used by ``predict(..., context=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from eo_models.checkpoint import CheckpointError, load_checkpoint, validate_checkpoint
from eo_models.family import ModelFamily, SceneContext, get_family
from eo_models.precision import Precision, autocast, prepare_model, resolve_precision, to_memory_format

__all__ = ["Predictor", "load_predictor", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """A trained model in eval mode plus the normalisation it was trained with.

    Attributes:
        family: Model family name (``eo_models.family.get_family``).
        num_classes: Labels are in ``[0, num_classes)``.
        in_channels: Number of bands a block must have.
        halo: Pixels of context each side that the caller should read around a tile.
        device: Where the forward pass runs.
        precision: ``"fp32"`` or ``"bf16"`` (:mod:`eo_models.precision`), resolved from ``"auto"``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        family: str | ModelFamily,
        num_classes: int,
        in_channels: int,
        halo: int,
        band_mean: Sequence[float],
        band_std: Sequence[float],
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        """Wrap a model; prefer ``load_predictor``, which builds everything from a checkpoint.

        Raises:
            ValueError: Band statistics that do not match ``in_channels``; an unknown ``precision``.
        """
        if len(band_mean) != in_channels or len(band_std) != in_channels:
            raise ValueError(
                f"band statistics have {len(band_mean)} means and {len(band_std)} stds "
                f"for {in_channels} bands"
            )
        self.model_family = family if isinstance(family, ModelFamily) else get_family(family)
        self.family = self.model_family.name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.halo = halo
        self.device = device
        self.precision: Precision = resolve_precision(precision, device)
        self.model = prepare_model(model.to(device).eval(), self.precision)
        self._band_mean = torch.tensor(band_mean, dtype=torch.float32, device=device)[:, None, None]
        self._band_std = torch.tensor(band_std, dtype=torch.float32, device=device)[:, None, None]

    def predict(
        self, block: np.ndarray, valid: np.ndarray | None = None, *, context: Any = None
    ) -> np.ndarray:
        """Label every pixel of one block.

        Args:
            block: Raw pixel values, shape (bands, rows, cols), any real numeric dtype.
            valid: Optional bool mask (rows, cols); False marks nodata pixels. They (and any NaN or
                infinite value) are set to 0 after normalisation, i.e. to the band mean, so they
                cannot spread NaN through the convolutions and the attention's global pooling. Their
                labels are meaningless; the caller writes nodata over them.
            context: Optional scene-wide context (``combine_context``); see ``predict_batch``.

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
        labels: np.ndarray = self.predict_batch(block[None], valid, context=context)[0]
        return labels

    def predict_batch(
        self, blocks: np.ndarray, valid: np.ndarray | None = None, *, context: Any = None
    ) -> np.ndarray:
        """Label several same-size blocks in one forward pass.

        Each block is still processed independently of the others (eval-mode BatchNorm uses running
        statistics and the attention pools per block), so batching only changes speed.

        Args:
            blocks: Raw pixel values, shape (N, bands, rows, cols), any real numeric dtype.
            valid: Optional bool mask (N, rows, cols); see ``predict``.
            context: Optional scene-wide context of the family's context pass, reduced over a whole
                scene by ``combine_context`` (the clusterer: channel-attention descriptors); the model
                then uses it instead of pooling over each block, so tiled inference equals whole-scene
                inference.

        Returns:
            uint8 labels of shape (N, rows, cols).

        Raises:
            ValueError: If the shape or band count is wrong, or a context is given to a family without
                a context pass.
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
        if not (np.issubdtype(blocks.dtype, np.number) or blocks.dtype == np.bool_) or np.iscomplexobj(
            blocks
        ):
            raise TypeError(f"block dtype must be real numeric, got {blocks.dtype}")
        expected_mask_shape = (blocks.shape[0], *blocks.shape[2:])
        if valid is not None and np.shape(valid) != expected_mask_shape:
            raise ValueError(f"valid mask must have shape {expected_mask_shape}, got {np.shape(valid)}")

        with torch.inference_mode(), autocast(self.precision, self.device):
            normalised = self._normalise(blocks, valid)
            if context is not None:
                scene = self._scene_context()
                outputs = scene.forward(self.model, scene.features(self.model, normalised), context)
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
        return to_memory_format(
            torch.where(keep, normalised, torch.zeros((), device=self.device)), self.precision
        )

    @property
    def supports_scene_context(self) -> bool:
        """Whether the family has a scene-wide context pass (the clusterer's attention pooling)."""
        return self.model_family.scene_context is not None

    def _scene_context(self) -> SceneContext:
        context = self.model_family.scene_context
        if context is None:
            raise ValueError(f"the {self.family} model family has no scene-wide context pass")
        return context

    def context_partial(self, block: np.ndarray, valid: np.ndarray | None, inner: tuple[slice, slice]) -> Any:
        """First pass over one tile: its partial scene context (the clusterer: feature sum, count, max).

        Args:
            block: Raw pixels (bands, rows, cols) of the tile grown by a halo of at least the
                convolutions' radius.
            valid: Optional bool mask (rows, cols).
            inner: The tile's own pixels within ``block``.

        Raises:
            ValueError: If the family has no context pass.
        """
        return self.context_pass(block, valid, inner)[0]

    def context_pass(
        self, block: np.ndarray, valid: np.ndarray | None, inner: tuple[slice, slice]
    ) -> tuple[Any, torch.Tensor]:
        """``context_partial`` and the tile's features it was computed from (for ``predict(features=)``).

        The features are the family's context-independent activations of the whole block (the
        clusterer: (1, 64, rows, cols), bfloat16 under bf16), kept by a caller that will predict the
        same block in the second pass.

        Raises:
            ValueError: If the family has no context pass.
        """
        context = self._scene_context()
        with torch.inference_mode(), autocast(self.precision, self.device):
            mask = None if valid is None else np.asarray(valid)[None]
            features = context.features(self.model, self._normalise(np.asarray(block)[None], mask))
            return context.partial(self.model, features, inner), features

    def predict_features(self, features: torch.Tensor, context: Any) -> np.ndarray:
        """Labels (rows, cols) uint8 of one block from its ``context_pass`` features and the scene context.

        The same labels as ``predict(block, valid, context=context)`` of the block the features came
        from, without running the convolutions again.

        Raises:
            ValueError: If the family has no context pass.
        """
        with torch.inference_mode(), autocast(self.precision, self.device):
            logits = self._scene_context().forward(self.model, features, context)
            labels: np.ndarray = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()[0]
            return labels

    def combine_context(self, partials: Sequence[Any]) -> Any:
        """Reduce the partials of every tile of a scene to the context ``predict`` takes."""
        return self._scene_context().combine(partials)


def load_predictor(
    path_or_ckpt: str | os.PathLike[str] | Mapping[str, Any],
    device: str | torch.device | None = None,
    *,
    precision: str = "auto",
) -> Predictor:
    """Build a ``Predictor`` from a checkpoint file or an already loaded checkpoint dict.

    Args:
        path_or_ckpt: Local ``.pt`` path, or the dict ``load_checkpoint`` / a training loop returns.
        device: ``None`` or ``"auto"`` for CUDA when available, else e.g. ``"cpu"``, ``"cuda:1"``.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:func:`eo_models.precision.resolve_precision`).

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
    try:
        family = get_family(family_name)
    except KeyError as error:
        raise CheckpointError(f"{source}: {error.args[0]}") from error
    try:
        model = family.load_model(ckpt)
    except RuntimeError as error:
        raise CheckpointError(
            f"{source}: its weights do not fit the {family_name} model described by its model_config: {error}"
        ) from error
    in_channels = family.in_channels(ckpt)
    if len(ckpt["band_mean"]) != in_channels:
        raise CheckpointError(
            f"{source}: model_config says {in_channels} input bands "
            f"but band_mean has {len(ckpt['band_mean'])}"
        )
    return Predictor(
        model,
        family=family,
        num_classes=int(ckpt["num_classes"]),
        in_channels=in_channels,
        halo=family.halo_for(ckpt),
        band_mean=[float(value) for value in ckpt["band_mean"]],
        band_std=[float(value) for value in ckpt["band_std"]],
        device=resolve_device(device),
        precision=precision,
    )
