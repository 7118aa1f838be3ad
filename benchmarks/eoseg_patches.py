"""Candidate speed/memory fixes for eoseg's tile and mosaic stages, applied by monkeypatching.

Nothing here changes files under ``eoseg/``: ``bench_tile_mosaic.py --patch NAME[,NAME...]`` applies these
inside the measuring process (and, for the cluster case, inside every Dask worker) to measure what each
proposed code change would buy. Each patch mirrors a small change that could be made in eoseg itself.

Patches:
    fast-moments   ``BandMoments.of_block`` from per-band histograms (``np.bincount``) for 8/16-bit
                   integer scenes, instead of boolean-indexing the block, casting it to float64 and reducing
                   four times (sum, sum of squares, min, max). Exact same results.
    gdal-cache     ``GDAL_CACHEMAX=64`` MiB in the tile process/workers: chunk windows are block-aligned, so
                   GDAL's block cache (default 5 % of RAM, ~1.2 GiB here) never gets a hit, only grows.
    direct-open    ``tile_chunk`` opens the two zarr arrays it touches directly (``zarr.open_array``),
                   instead of opening the group three times and parsing the ``eoseg`` attribute per chunk.
    clevel1        the store's Blosc zstd level 1 instead of 3 (``create_store(compression_level=1)``).
    scratch-none   mosaic: the scratch GeoTIFF uncompressed instead of ZSTD level 1.
    mosaic-cache   mosaic: ``GDAL_CACHEMAX=64`` MiB (dirty scratch tiles otherwise pile up in the block cache).
    no-worker-profiler
                   cluster: ``distributed.worker.profile.enabled: False`` (Dask workers otherwise sample every
                   thread's stack every 10 ms); must be applied before the cluster starts.
"""

from __future__ import annotations

import functools
import os

import numpy as np

ALL = (
    "fast-moments",
    "gdal-cache",
    "direct-open",
    "clevel1",
    "scratch-none",
    "mosaic-cache",
    "no-worker-profiler",
)


def _fast_of_block(cls, block: np.ndarray, valid: np.ndarray):
    """Moments of the valid pixels from per-band histograms (integer dtypes up to 16 bits)."""
    if block.dtype not in (np.uint8, np.uint16, np.int8, np.int16):
        return _original_of_block.__func__(cls, block, valid)
    bands = block.shape[0]
    offset = 0 if block.dtype.kind == "u" else -int(np.iinfo(block.dtype).min)
    length = int(np.iinfo(block.dtype).max) + offset + 1
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        return cls(0, np.zeros(bands), np.zeros(bands), np.full(bands, np.inf), np.full(bands, -np.inf))
    full = n_valid == valid.size
    hists = np.empty((bands, length), dtype=np.int64)
    for band in range(bands):
        values = block[band].ravel() if full else block[band][valid]
        if offset:
            values = values.astype(np.int32) + offset
        hists[band] = np.bincount(values, minlength=length)
    levels = np.arange(length, dtype=np.float64) - offset
    total = hists @ levels
    total_sq = hists @ (levels * levels)
    present = hists > 0
    minimum = levels[present.argmax(axis=1)]
    maximum = levels[length - 1 - present[:, ::-1].argmax(axis=1)]
    return cls(n_valid, total, total_sq, minimum, maximum)


_original_of_block = None


def _direct_tile_chunk(job):
    """``tile_chunk`` opening only the data array and the chunk flags (no group/attribute reads)."""
    import zarr

    from eoseg.errors import CorruptSceneError
    from eoseg.io import storage
    from eoseg.tile.stage import BandMoments, _open_scene_cached, valid_pixel_mask

    options = storage.storage_options_for(job.store_uri)
    array = zarr.open_array(f"{job.store_uri}/image", mode="r+", storage_options=options, zarr_format=3)
    rows, cols = job.window.slices
    if job.already_done:
        block = np.asarray(array[:, rows, cols])
    else:
        try:
            with storage.gdal_env(job.scene_uri):
                block = _open_scene_cached(job.scene_uri).read(window=job.window.to_rasterio())
        except Exception as error:
            raise CorruptSceneError(f"{job.scene_uri}: reading pixels failed ({error})") from error
        array[:, rows, cols] = block
        done = zarr.open_array(
            f"{job.store_uri}/chunk_done", mode="r+", storage_options=options, zarr_format=3
        )
        done[job.chunk_index] = 1
    return BandMoments.of_block(block, valid_pixel_mask(block, job.nodata))


def apply(names: list[str] | tuple[str, ...]) -> list[str]:
    """Apply the named patches in this process; returns what was applied."""
    global _original_of_block
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ValueError(f"unknown patch(es) {unknown}; known: {ALL}")
    import eoseg.mosaic.cog
    import eoseg.tile.stage

    if "no-worker-profiler" in names:
        os.environ["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"  # inherited by worker processes
        import dask

        dask.config.set({"distributed.worker.profile.enabled": False})
    if "gdal-cache" in names or "mosaic-cache" in names:
        os.environ["GDAL_CACHEMAX"] = "64"
        # GDAL may already be initialised in this process: set the live value too. rasterio takes
        # GDAL_CACHEMAX as an int in *bytes* (GDALSetCacheMax64); the environment variable is in MiB.
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", 64 * 2**20)
    if "fast-moments" in names and _original_of_block is None:
        _original_of_block = eoseg.tile.stage.BandMoments.__dict__["of_block"]
        eoseg.tile.stage.BandMoments.of_block = classmethod(_fast_of_block)
    if "direct-open" in names:
        eoseg.tile.stage.tile_chunk = _direct_tile_chunk
    if "clevel1" in names:
        eoseg.tile.stage.create_store = functools.partial(
            eoseg.store.layout.create_store, compression_level=1
        )
    if "scratch-none" in names:
        original = eoseg.mosaic.cog._write_scratch_geotiff
        if not getattr(original, "_patched", False):
            import rasterio

            def scratch_none(path, info, store_uri, band_index, show_progress):
                real_open = rasterio.open

                def open_uncompressed(fp, mode="r", **profile):
                    if mode == "w":
                        profile.pop("zstd_level", None)
                        profile["compress"] = "NONE"
                    return real_open(fp, mode, **profile)

                rasterio.open = open_uncompressed
                try:
                    return original(path, info, store_uri, band_index, show_progress)
                finally:
                    rasterio.open = real_open

            scratch_none._patched = True
            eoseg.mosaic.cog._write_scratch_geotiff = scratch_none
    return list(names)
