"""Tasks for the stages that move pixels between storage formats: tile and mosaic."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from eoseg.compute.cluster import connect
from eoseg.config import MosaicOptions, TileOptions
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.scene.inspect import inspect_scene
from eoseg.tile.stage import tile_scene
from tasks.storage_task import storage_task


@storage_task("inspect-scene", run_name_from="scene_uri")
def inspect_scene_task(scene_uri: str, *, options: TileOptions) -> dict[str, Any]:
    """Validate a scene before any cluster or output exists; returns its description."""
    return inspect_scene(
        scene_uri, allow_ungeoreferenced=options.allow_ungeoreferenced, warp_gcps=options.warp_gcps
    ).to_dict()


@storage_task("tile", run_name_from="scene_uri")
def tile_task(
    scene_uri: str, store_uri: str, *, options: TileOptions, overwrite: bool, scheduler_address: str | None
) -> dict[str, Any]:
    """Tile a scene into a Zarr store on the Dask cluster; returns the store's metadata."""
    with connect(scheduler_address) as client:
        info = tile_scene(
            scene_uri,
            store_uri,
            chunk_size=options.chunk_size,
            overwrite=overwrite,
            allow_ungeoreferenced=options.allow_ungeoreferenced,
            warp_gcps=options.warp_gcps,
            client=client,
        )
    return info.to_attrs()


@storage_task("mosaic", run_name_from="cog_uri")
def mosaic_task(store_uri: str, cog_uri: str, *, options: MosaicOptions, overwrite: bool) -> dict[str, Any]:
    """Write one band of a store (``options.band``) as a Cloud-Optimized GeoTIFF; returns a summary."""
    band, resampling = options.band, options.overview_resampling
    return asdict(
        mosaic_to_cog(store_uri, cog_uri, band=band, overwrite=overwrite, overview_resampling=resampling)
    )
