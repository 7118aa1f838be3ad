"""Mosaic stage: one band of a store becomes a Cloud-Optimized GeoTIFF with the scene's georeferencing.

Chunks are copied one by one into a tiled scratch GeoTIFF (so memory is one chunk, whatever the scene
size), then GDAL's COG driver lays out the final file: 512 x 512 internal tiles, DEFLATE with the
horizontal predictor, overviews by nearest (or mode) resampling, nodata, the class colour table and
descriptive metadata tags. The result is validated with rio-cogeo before it is moved into place, and it
reaches the target only through :func:`eoseg.io.storage.atomic_output_file` (rename, or one S3 upload).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eoseg import __version__
from eoseg.io import storage
from eoseg.mosaic.colors import class_colormap
from eoseg.compute.chunks import _ProgressReporter
from eoseg.errors import BandCountError, ConfigurationError, OutputExistsError
from eoseg.geometry import rasterio_grid_profile
from eoseg.store.layout import StoreInfo, open_data_array, read_store_info

logger = logging.getLogger("eoseg.mosaic.cog")
COG_BLOCK_SIZE = 512
OVERVIEW_RESAMPLINGS = ("nearest", "mode")


@dataclass(frozen=True)
class CogSummary:
    """What was written."""

    uri: str
    width: int
    height: int
    dtype: str
    overview_levels: tuple[int, ...]
    nodata: float | int | None
    num_classes: int | None


def overview_factors(height: int, width: int, *, block: int = COG_BLOCK_SIZE) -> list[int]:
    """Powers of two until the smallest overview fits in one block (none for scenes within one block)."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > block:
        factors.append(factor)
        factor *= 2
    return factors


def _select_band(info: StoreInfo, band: int | None) -> int | None:
    if info.kind == "labels":
        if band not in (None, 1):
            raise BandCountError(f"a label store has one band; --band {band} does not exist")
        return None
    if band is None:
        raise ConfigurationError(
            f"the store is an image store with {info.band_count} band(s); choose which one to write with "
            "--band N (1-based), or mosaic a label store from `eoseg predict`."
        )
    if not 1 <= band <= info.band_count:
        raise BandCountError(f"--band {band} is out of range: the store has bands 1..{info.band_count}")
    return band - 1


def cog_tags(info: StoreInfo, store_uri: str, *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Metadata a user can catalogue, stored as GeoTIFF tags (GDAL metadata)."""
    tags = {
        "EOSEG_VERSION": __version__,
        "EOSEG_STORE": store_uri,
        "EOSEG_SOURCE": info.source_uri,
        "EOSEG_KIND": info.kind,
        "EOSEG_CREATED": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if info.acquired:
        tags["TIFFTAG_DATETIME"] = info.acquired
    if info.num_classes is not None:
        tags["EOSEG_NUM_CLASSES"] = str(info.num_classes)
    if info.model:
        tags["EOSEG_MODEL"] = json.dumps(info.model, sort_keys=True)
    tags.update(extra or {})
    return tags


def _write_scratch_geotiff(path: str, info: StoreInfo, store_uri: str, band_index: int | None,
                           show_progress: bool | None) -> None:
    import rasterio

    array = open_data_array(store_uri, info)
    profile = {
        "driver": "GTiff", **rasterio_grid_profile(info.geobox), "count": 1, "dtype": info.dtype,
        "nodata": info.nodata, "tiled": True, "blockxsize": COG_BLOCK_SIZE, "blockysize": COG_BLOCK_SIZE,
        "compress": "ZSTD", "zstd_level": 1, "bigtiff": "IF_SAFER",
    }  # fmt: skip
    reporter = _ProgressReporter("mosaic", len(info.grid), show_bar=show_progress)
    try:
        with rasterio.open(path, "w", **profile) as scratch:
            for _, window in info.grid.windows():
                rows, cols = window.slices
                block = array[rows, cols] if band_index is None else array[band_index, rows, cols]
                scratch.write(np.asarray(block), 1, window=window.to_rasterio())
                reporter.advance()
            if info.kind == "labels" and info.num_classes is not None and info.dtype == "uint8":
                scratch.write_colormap(1, class_colormap(info.num_classes))
            if info.kind == "labels":
                scratch.set_band_description(1, "class")
            elif band_index is not None:
                scratch.set_band_description(1, info.band_names[band_index])
            scratch.update_tags(**cog_tags(info, store_uri))
    finally:
        reporter.close()


def mosaic_to_cog(
    store_uri: str,
    cog_uri: str,
    *,
    band: int | None = None,
    overwrite: bool = False,
    overview_resampling: str = "nearest",
    show_progress: bool | None = None,
) -> CogSummary:
    """Write one band of the store at ``store_uri`` as a Cloud-Optimized GeoTIFF at ``cog_uri``.

    Args:
        store_uri: a finished eoseg store (label stores have one band; image stores need ``band``).
        cog_uri: the GeoTIFF to write (local path or ``s3://``).
        band: 1-based band of an image store.
        overwrite: replace an existing ``cog_uri``.
        overview_resampling: ``nearest`` (fast) or ``mode`` (majority class; better for labels).
        show_progress: terminal progress bar on/off (default: when stderr is a terminal).

    Raises:
        OutputExistsError: ``cog_uri`` exists and ``overwrite`` is False (checked before any work).
        RuntimeError: the written file fails COG validation (nothing is left at ``cog_uri``).
    """
    import rasterio
    import rasterio.shutil
    from rio_cogeo.cogeo import cog_validate

    if overview_resampling not in OVERVIEW_RESAMPLINGS:
        raise ConfigurationError(f"overview resampling must be one of {OVERVIEW_RESAMPLINGS}, "
                                 f"got {overview_resampling!r}")
    store_uri = storage.normalise_uri(store_uri)
    cog_uri = storage.normalise_uri(cog_uri)
    info = read_store_info(store_uri)
    band_index = _select_band(info, band)
    if storage.exists(cog_uri) and not overwrite:
        raise OutputExistsError(f"{cog_uri}: output already exists. Pass --overwrite to replace it.")
    factors = overview_factors(info.height, info.width)
    scratch_parent = None if storage.is_s3(cog_uri) else str(Path(cog_uri).parent)
    if scratch_parent:
        os.makedirs(scratch_parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".eoseg-mosaic-", dir=scratch_parent) as scratch_dir:
        scratch = os.path.join(scratch_dir, "scratch.tif")
        _write_scratch_geotiff(scratch, info, store_uri, band_index, show_progress)
        with storage.atomic_output_file(cog_uri, overwrite=overwrite) as staging:
            creation = {
                "BLOCKSIZE": COG_BLOCK_SIZE, "COMPRESS": "DEFLATE", "PREDICTOR": "YES", "LEVEL": 6,
                "BIGTIFF": "IF_SAFER", "OVERVIEWS": "AUTO" if factors else "NONE",
                "OVERVIEW_RESAMPLING": overview_resampling.upper(), "RESAMPLING": "NEAREST",
                "NUM_THREADS": "ALL_CPUS",
            }  # fmt: skip
            with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                rasterio.shutil.copy(scratch, staging, driver="COG", **creation)
            valid, errors, warnings = cog_validate(staging, quiet=True)
            if not valid or errors or warnings:
                raise RuntimeError(f"{cog_uri}: the written file is not a valid COG (errors: {errors}; "
                                   f"warnings: {warnings}); nothing was published. Please report this.")
            with rasterio.open(staging) as written:
                levels = tuple(written.overviews(1))
    logger.info("wrote %s (%d x %d, overviews %s)", cog_uri, info.width, info.height, list(levels))
    return CogSummary(cog_uri, info.width, info.height, info.dtype, levels, info.nodata, info.num_classes)
