"""Maps a user can open for a city of many input tiles: one COG per input tile on that tile's exact grid.

``--per-tile-maps DIR`` writes, from the label store of the whole mosaic (so every tile map has the same
model, the same classes and no seam with its neighbours):

- ``DIR/<tile name>.tif``: one Cloud-Optimized GeoTIFF per input tile, the window of the label store that
  the tile covers (same shape, transform and CRS as the input tile), colour table, nodata 255;
- ``DIR/<name>.vrt``: a GDAL VRT over them (QGIS and GDAL open the city as one layer);
- ``DIR/<name>.png``: a quick-look of the whole area (scene and map side by side, at most ``max_size``
  pixels a side: the tile maps' overviews are read, never the full resolution);
- ``DIR/collection.json``: a STAC Collection (pystac) with one Item per tile map (as
  :func:`eoseg.catalog.stac.build_map_item` describes a map), the checkpoint as a Collection asset.

The tile maps run through the stage contract (one job per tile, on threads of this process); each map
is published atomically, and the VRT, quick-look and Collection are written after all of them.

A single COG of the whole area is refused above :data:`eoseg.mosaic.cog.MAX_SINGLE_COG_PIXELS` (4
gigapixels by default): :func:`eoseg.mosaic.cog.check_single_cog_size`, called by the mosaic stage
(:func:`eoseg.mosaic.cog.mosaic_to_cog`) and up front by ``segment-scene``, says to use ``--per-tile-maps``.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from eoseg.catalog.acquisitions import join_uri, scene_stem
from eoseg.compute.stage import ChunkedStage, run_stage
from eoseg.errors import ConfigurationError
from eoseg.geometry import Window, footprint_wgs84, rasterio_grid_profile
from eoseg.io import publish, storage
from eoseg.mosaic.cog import COG_BLOCK_SIZE, cog_tags, overview_factors
from eoseg.mosaic.colors import class_colormap
from eoseg.mosaic.legend import apply_legend, read_legend
from eoseg.scene.sources import SceneSources
from eoseg.scene.vrt import tiles_vrt_xml
from eoseg.store.layout import StoreInfo, open_data_array, read_store_info
from eoseg.store.lifecycle import check_file_output


@dataclass(frozen=True)
class TileMapJob:
    """One input tile's map: which window of the label store, and the COG to write."""

    labels_uri: str
    window: Window
    target: str
    source_uri: str


def write_tile_map(job: TileMapJob) -> None:
    """Write the window of the label store covered by one input tile as a COG on that tile's grid."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    info = read_store_info(job.labels_uri)
    labels = np.asarray(open_data_array(job.labels_uri, info)[job.window.slices])
    geobox = job.window.geobox_in(info.geobox)
    profile = {
        "driver": "GTiff", "count": 1, "dtype": "uint8", "nodata": info.nodata, "tiled": True,
        "blockxsize": COG_BLOCK_SIZE, "blockysize": COG_BLOCK_SIZE, **rasterio_grid_profile(geobox),
    }  # fmt: skip
    creation = {
        "BLOCKSIZE": COG_BLOCK_SIZE, "COMPRESS": "DEFLATE", "PREDICTOR": "YES",
        "OVERVIEWS": "AUTO" if overview_factors(*labels.shape) else "NONE", "OVERVIEW_RESAMPLING": "NEAREST",
    }  # fmt: skip
    with MemoryFile() as memory, memory.open(**profile) as scratch:
        scratch.write(labels, 1)
        if info.num_classes is not None:
            scratch.write_colormap(1, class_colormap(info.num_classes))
        scratch.set_band_description(1, "class")
        scratch.update_tags(**cog_tags(info, job.labels_uri, extra={"EOSEG_INPUT_TILE": job.source_uri}))
        with publish.publishing_file(job.target, overwrite=True) as staging:
            rasterio.shutil.copy(scratch, staging, driver="COG", **creation)


@dataclass(frozen=True)
class PerTileMaps:
    """What :func:`write_per_tile_maps` wrote."""

    maps: tuple[str, ...]
    vrt: str
    quicklook: str
    collection: str


def _tile_map_names(sources: SceneSources, folder: str) -> list[str]:
    names = [f"{scene_stem(tile.uri)}.tif" for tile in sources.tiles]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"{folder}: several input tiles have the same file name ({', '.join(repeated[:5])}), so their "
            "maps would overwrite each other; rename them or map them in separate runs."
        )
    return [join_uri(folder, name) for name in names]


def write_per_tile_maps(
    labels_uri: str,
    sources: SceneSources,
    folder: str,
    *,
    name: str,
    model_uri: str | None = None,
    legend_uri: str | None = None,
    max_size: int = 1024,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> PerTileMaps:
    """Write one COG per input tile, a VRT over them, a quick-look and a STAC Collection into ``folder``.

    Args:
        labels_uri: the finished label store of the whole mosaic (on ``sources.scene.geobox``).
        sources: the input tiles and their windows (:func:`eoseg.scene.sources.open_scene_sources`).
        folder: local folder or ``s3://`` prefix for the outputs.
        name: the stem of the VRT, quick-look and Collection id (e.g. the map's name).
        model_uri: the checkpoint, an asset of the Collection.
        legend_uri: a legend (:mod:`eoseg.mosaic.legend`) applied to every tile map; an asset too.
        max_size: longest side of the quick-look's panels in pixels.
        overwrite: replace the maps of an earlier run (its VRT is the sign of one).
        show_progress: terminal progress bar on/off (default: when stderr is a terminal).

    Raises:
        ConfigurationError: two input tiles have the same file name.
        IncompleteStoreError: the label store is not finished.
        OutputExistsError: the VRT of an earlier run is in ``folder`` and ``overwrite`` is False.
    """
    info = read_store_info(labels_uri)
    folder = storage.normalise_uri(folder)
    targets = _tile_map_names(sources, folder)
    vrt = join_uri(folder, f"{name}.vrt")
    check_file_output(vrt, overwrite=overwrite)
    jobs = [
        TileMapJob(labels_uri, tile.window, target, tile.uri)
        for tile, target in zip(sources.tiles, targets, strict=True)
    ]
    stage = ChunkedStage(
        label="tile maps",
        jobs=jobs,
        done=[False] * len(jobs),  # maps of another model may be there: every tile is written again
        compute=write_tile_map,
        finalise=lambda _: None,
        local=True,
    )
    run_stage(stage, show_progress=show_progress)
    if legend_uri:
        legend = read_legend(legend_uri)
        for target in targets:
            apply_legend(target, legend)
    local_folder = None if storage.is_s3(folder) else folder
    xml = tiles_vrt_xml(
        info.geobox, [(target, job.window) for target, job in zip(targets, jobs, strict=True)],
        band_count=1, dtype="uint8", nodata=info.nodata, vrt_folder=local_folder,
    )  # fmt: skip
    publish.write_text(vrt, xml, overwrite=True)
    quicklook = _write_quicklook(sources, vrt, join_uri(folder, f"{name}.png"), max_size=max_size)
    # Absolute (a relative path is the caller's working folder, not the JSON's, which STAC resolves against).
    assets = {key: storage.normalise_uri(uri) if uri else None for key, uri in (("model", model_uri),
              ("legend", legend_uri))}  # fmt: skip
    collection = _write_collection(info, sources, targets, folder, name=name, assets=assets)
    return PerTileMaps(tuple(targets), vrt, quicklook, collection)


def _write_quicklook(sources: SceneSources, vrt: str, png: str, *, max_size: int) -> str:
    from eoseg.mosaic.quicklook import write_quicklook
    from eoseg.scene.vrt import scene_raster_path

    with tempfile.TemporaryDirectory(prefix="eoseg-ql-") as scratch, storage.gdal_env(vrt):
        scene = scene_raster_path([tile.uri for tile in sources.tiles], scratch)
        local_png = os.path.join(scratch, "quicklook.png")
        write_quicklook(
            scene, storage.gdal_path(vrt), local_png, max_size=max_size, title=PurePosixPath(vrt).name
        )
        publish.publish_file(local_png, png, overwrite=True)
    return png


def _write_collection(
    info: StoreInfo,
    sources: SceneSources,
    maps: list[str],
    folder: str,
    *,
    name: str,
    assets: dict[str, str | None],
) -> str:
    """A STAC Collection of the tile maps (one Item each), self-contained in ``folder``."""
    import pystac

    from eoseg.catalog.stac import PYTORCH_MEDIA_TYPE, StorageStacIO, build_map_item

    items = [
        build_map_item(
            target,
            scene_uri=tile.uri,
            acquired_tag=None,
            scene_modified=storage.modified_time(tile.uri),
            model_uri=assets.get("model"),
            properties={"eoseg:mosaic": name},
        )
        for tile, target in zip(sources.tiles, maps, strict=True)
    ]
    footprint = footprint_wgs84(info.geobox)
    bbox = footprint[1] if footprint else [-180.0, -90.0, 180.0, 90.0]
    times = sorted(item.datetime for item in items if item.datetime is not None)
    interval: list[dt.datetime | None] = [times[0], times[-1]] if times else [None, None]
    extent = pystac.Extent(
        pystac.SpatialExtent([bbox]),
        pystac.TemporalExtent([interval]),
    )
    collection = pystac.Collection(
        id=name, description=f"Land-cover map of {name}: one map per input tile ({len(items)})", extent=extent
    )
    kinds = {"model": (PYTORCH_MEDIA_TYPE, "Checkpoint"), "legend": ("application/yaml", "Legend")}
    for key, href in assets.items():
        if href:
            media_type, title = kinds[key]
            collection.add_asset(
                key, pystac.Asset(href=href, media_type=media_type, roles=[key], title=title)
            )
    collection.add_items(items)
    uri = join_uri(folder, "collection.json")
    collection.normalize_hrefs(folder)
    collection.save(pystac.CatalogType.SELF_CONTAINED, dest_href=folder, stac_io=StorageStacIO())
    return uri
