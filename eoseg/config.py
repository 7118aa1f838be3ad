"""Validated options of each stage (pydantic), shared by the CLI, the flows and the deployments.

Every field has a description, so the Prefect UI renders a documented form for flow parameters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eoseg.tile.stage import DEFAULT_CHUNK_SIZE


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TileOptions(_Options):
    """How a scene becomes a Zarr tile store."""

    chunk_size: int = Field(
        default=DEFAULT_CHUNK_SIZE, ge=16, le=16384,
        description="Chunk edge in pixels (all bands per chunk). Memory per Dask task is about "
        "chunk_size^2 x bands x bytes per pixel.",
    )  # fmt: skip
    allow_ungeoreferenced: bool = Field(
        default=False, description="Accept a raster without CRS; outputs are then pixel grids without CRS."
    )


class MosaicOptions(_Options):
    """How a store becomes a Cloud-Optimized GeoTIFF."""

    band: int | None = Field(
        default=None, ge=1, description="1-based band to write from an image store (label stores: leave empty)."
    )
    overview_resampling: Literal["nearest", "mode"] = Field(
        default="nearest", description="Overview resampling: nearest (fast) or mode (majority class)."
    )


class ClustererTrainingOptions(_Options):
    """Training of the single-scene clusterer (Saha et al. 2021, Algorithm 1). Defaults are the paper's
    where it gives them (I, J, K); the rest are documented choices (see eo_models.clusterer.train)."""

    num_classes: int = Field(default=8, ge=2, le=254, description="K: number of output features = clusters (paper: 8).")
    epochs: int = Field(default=2, ge=1, description="I: passes over all patches (paper: 2).")
    iterations: int = Field(default=50, ge=1, description="J: updates on each batch before the next (paper: 50).")
    patch_size: int = Field(default=64, ge=8, description="Patch edge R' = C' in pixels (not given by the paper).")
    batch_size: int = Field(default=16, ge=2, description="B: patches per batch (not given by the paper).")
    learning_rate: float = Field(default=1e-3, gt=0, description="Optimiser learning rate (not given by the paper).")
    optimizer: Literal["adam", "sgd"] = Field(default="adam", description="Adam, or SGD with momentum 0.9.")
    seed: int = Field(default=0, description="Seed for weights, patch order and shuffles (reproducible on CPU).")
    max_patches: int | None = Field(
        default=None, ge=2,
        description="Train on a seeded random subset of at most this many patches (a CPU shortcut; the paper "
        "uses all patches). Empty: all patches.",
    )  # fmt: skip
    device: str = Field(default="auto", description="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")

    def training_params(self) -> dict:
        """Keyword arguments of eo_models.clusterer.train.ClustererTrainingParams."""
        return self.model_dump(exclude={"max_patches"})


class PredictOptions(_Options):
    """Tiled inference over a tile store."""

    halo: int | None = Field(
        default=None, ge=0,
        description="Context pixels read around each chunk (overlap-tile); empty: the model family's default.",
    )  # fmt: skip
    attention_pooling: Literal["scene", "tile"] = Field(
        default="scene",
        description="Clusterer's channel attention: 'scene' pools over the whole scene in a first pass "
        "(tiled output equals whole-scene output), 'tile' pools per tile (one pass, faster).",
    )
