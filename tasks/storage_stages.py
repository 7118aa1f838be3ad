"""Tasks for the stages that move pixels between storage formats: tile and mosaic."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from eoseg.compute.cluster import connect
from eoseg.config import MosaicOptions, TileOptions
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.mosaic.legend import apply_legend, read_legend
from eoseg.mosaic.per_tile import write_per_tile_maps
from eoseg.scene.sources import open_scene_sources
from eoseg.tile.stage import tile_scene
from tasks.storage_task import storage_task


@storage_task("inspect-scene", run_name_from="scene_uri")
def inspect_scene_task(scene_uri: str | list[str], *, options: TileOptions) -> dict[str, Any]:
    """Validate a scene (one file, or many on one grid) before any cluster or output exists; describe it.

    The description is the whole scene's (the union grid of its files), with ``files``: how many.
    """
    sources = open_scene_sources(
        scene_uri, allow_ungeoreferenced=options.allow_ungeoreferenced, warp_gcps=options.warp_gcps,
        resample=options.resample,
    )  # fmt: skip
    return {**sources.scene.to_dict(), "files": len(sources.tiles)}


@storage_task("tile", run_name_from="scene_uri")
def tile_task(
    scene_uri: str | list[str],
    store_uri: str,
    *,
    options: TileOptions,
    overwrite: bool,
    scheduler_address: str | None,
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
            resample=options.resample,
        )
    return info.to_attrs()


@storage_task("mosaic", run_name_from="cog_uri")
def mosaic_task(
    store_uri: str,
    cog_uri: str,
    *,
    options: MosaicOptions,
    overwrite: bool,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Write one band of a store (``options.band``) as a Cloud-Optimized GeoTIFF; returns a summary.

    A store of more than ``options.max_pixels`` pixels is refused (per-tile maps are the way out). The
    pieces of an ``s3://`` COG are written by the workers of the cluster at ``scheduler_address``.
    """
    band, resampling = options.band, options.overview_resampling
    with connect(scheduler_address) as client:
        summary = mosaic_to_cog(
            store_uri, cog_uri, band=band, overwrite=overwrite, overview_resampling=resampling,
            max_pixels=options.max_pixels, client=client,
        )  # fmt: skip
    return asdict(summary)


@storage_task("tile-maps", run_name_from="labels_uri")
def per_tile_maps_task(
    labels_uri: str,
    scene_uri: str | list[str],
    folder: str,
    *,
    name: str,
    model_uri: str | None,
    legend_uri: str | None,
    overwrite: bool,
) -> dict[str, Any]:
    """One COG per input tile, a VRT over them, a quick-look and a STAC Collection in ``folder``."""
    sources = open_scene_sources(scene_uri, allow_ungeoreferenced=True)
    written = write_per_tile_maps(
        labels_uri,
        sources,
        folder,
        name=name,
        model_uri=model_uri,
        legend_uri=legend_uri,
        overwrite=overwrite,
    )
    return asdict(written)


@storage_task("legend", run_name_from="map_uri")
def legend_task(map_uri: str, legend_uri: str) -> dict[int, str]:
    """Apply a legend (names, colours, optional merge) to a label COG; returns ``{value: name}``."""
    return apply_legend(map_uri, read_legend(legend_uri))
