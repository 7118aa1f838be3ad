"""Validated options of each stage (pydantic), shared by the CLI, the flows and the deployments.

Every field has a description, so the Prefect UI renders a documented form for flow parameters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eoseg.tiling import DEFAULT_CHUNK_SIZE


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
