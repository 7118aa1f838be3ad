"""Flows for single storage stages: tile a scene, mosaic a store. The CLI's `tile` and `mosaic` call them."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from eoseg.compute.cluster import ClusterSpec, stage_cluster
from eoseg.config import MosaicOptions, TileOptions
from eoseg.geometry import ChunkGrid
from eoseg.mosaic.cog import pieces_for_workers
from tasks.storage_stages import inspect_scene_task, mosaic_task, tile_task


def inspect_scene_logged(scene_uri: str | list[str], options: TileOptions) -> dict[str, Any]:
    """Validate a scene before any cluster or output exists, and log its size; returns its description."""
    scene = inspect_scene_task(scene_uri, options=options)
    get_run_logger().info(
        "scene %s: %d file(s), %d x %d px, %d band(s), %s",
        scene["uri"],
        scene["files"],
        scene["width"],
        scene["height"],
        scene["band_count"],
        scene["dtype"],
    )
    return scene


@flow(name="tile-scene", log_prints=True)
def tile_scene_flow(
    scene_uri: str | list[str],
    store_uri: str,
    options: TileOptions = TileOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tile a scene into one chunked Zarr v3 store, in parallel: on threads of this process, or on the Dask
    cluster when one is given (an address, a configuration file, or a local cluster shape).

    The scene is a GeoTIFF (local path or s3:// URI) or many on one grid: a list, a folder, an s3://
    prefix or a VRT of tiles; they become one store on their union grid (gaps are nodata; where tiles
    overlap the first wins).

    Running it again on an interrupted store resumes it (only chunks not flagged done are computed); a
    finished store is refused unless ``overwrite``. The stage decides (eoseg.store.lifecycle).
    """
    scene = inspect_scene_logged(scene_uri, options)
    chunks = len(ChunkGrid(scene["height"], scene["width"], options.chunk_size, options.chunk_size))
    # Tiling releases the GIL (GDAL decoding, Blosc): threads of the flow's process, as `eoseg tile` without
    # Prefect, unless a cluster (address, configuration file, a local shape other than the defaults) is given.
    with stage_cluster(cluster, work_chunks=chunks, threads=True) as address:
        info = tile_task(
            scene_uri, store_uri, options=options, overwrite=overwrite, scheduler_address=address
        )
    get_run_logger().info("tile store written: %s", store_uri)
    return info


@flow(name="mosaic-store", log_prints=True)
def mosaic_flow(
    store_uri: str,
    cog_uri: str,
    options: MosaicOptions = MosaicOptions(),
    overwrite: bool = False,
    cluster: ClusterSpec = ClusterSpec(),
) -> dict[str, Any]:
    """Write one band of a Zarr store (a label map, or an image band) as a Cloud-Optimized GeoTIFF.

    The pieces of an ``s3://`` COG go to the configured Dask cluster (``cluster``) when there is one, else
    to threads of this process; a local COG's pieces are written by threads of this process.
    """
    work = pieces_for_workers(store_uri, cog_uri)
    with stage_cluster(cluster, work_chunks=work, threads=True) as address:
        summary = mosaic_task(
            store_uri, cog_uri, options=options, overwrite=overwrite, scheduler_address=address
        )
    get_run_logger().info("COG written: %s", cog_uri)
    return summary
