"""Mosaic stage: one band of a store becomes a Cloud-Optimized GeoTIFF with the scene's georeferencing.

The stage contract (:mod:`eoseg.compute.stage`): each chunk of the store becomes a small uncompressed
GeoTIFF piece in the output's staging folder (:class:`eoseg.store.lifecycle.FileOutput`; memory is one
chunk per thread, whatever the scene size), with its own overviews at the COG's factors when they divide
the chunk size (:func:`piece_overviews`); a piece that exists is done, so an interrupted mosaic resumes.
The pieces are written on threads of this process, in parallel. The finalise step describes the pieces
as one VRT with the store's georeferencing (and one VRT per overview level, listed as its overviews) and
GDAL's COG driver lays out the final file from it, compressing on all CPUs: 512 x 512 internal tiles,
DEFLATE with the horizontal predictor, the pieces' overviews (or, when chunks do not allow them, overviews
it computes by nearest or mode resampling), nodata, the class colour table and descriptive metadata tags.
The result is validated with rio-cogeo before it is published (:mod:`eoseg.io.publish`: rename, or one
S3 upload from the local file: GDAL 3.10's COG driver cannot write to ``/vsis3/``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from eoseg import __version__
from eoseg.compute.stage import ChunkedStage, run_stage
from eoseg.errors import BandCountError, ConfigurationError, CorruptStoreError
from eoseg.geometry import Window, rasterio_grid_profile
from eoseg.io import publish, storage
from eoseg.mosaic.colors import class_colormap
from eoseg.store.layout import StoreInfo, open_data_array, read_store_info
from eoseg.store.lifecycle import FileOutput, discarded_on_bad_input, finish_file_output, open_file_output

logger = logging.getLogger("eoseg.mosaic.cog")
COG_BLOCK_SIZE = 512
OVERVIEW_RESAMPLINGS = ("nearest", "mode")
PIECE_COMPRESSION = "NONE"
"""Pieces are staged uncompressed: ZSTD level 1 cost about as much CPU (encoding here, decoding again in the
COG driver) as the whole rest of the piece work (benchmarks/results/tile_mosaic.md); the price is local
disk of one value per pixel (1 byte for a label map) while the COG is built."""


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


MAX_SINGLE_COG_PIXELS = 4_000_000_000
"""Largest map written as one COG (4 gigapixels); beyond it, per-tile maps (``--per-tile-maps``)."""


def check_single_cog_size(pixels: int, *, limit: int = MAX_SINGLE_COG_PIXELS, what: str = "the map") -> None:
    """Refuse one COG of ``pixels`` pixels above ``limit``.

    Raises:
        ConfigurationError: too large; the message points to ``--per-tile-maps``.
    """
    if pixels > limit:
        raise ConfigurationError(
            f"{what}: {pixels:,} pixels is more than one COG should hold (limit {limit:,}); write one map "
            "per input tile with --per-tile-maps DIR (a VRT over them opens as one layer), or raise the "
            "limit with --max-cog-pixels."
        )


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
    return tags | (extra or {})


@dataclass(frozen=True)
class MosaicChunkJob:
    """One chunk of the mosaic stage: which store band and window, and the piece file to write.

    ``overviews``: factors of the overviews the piece builds itself (:func:`piece_overviews`), by
    ``overview_resampling``; ``nodata``: the store's nodata, set on the piece so that mode overviews leave
    it out as GDAL's COG driver does for the whole band.
    """

    store_uri: str
    variable: str
    band_index: int | None
    window: Window
    piece: str
    overviews: tuple[int, ...] = ()
    overview_resampling: str = "nearest"
    nodata: float | int | None = None
    transform: tuple[float, ...] | None = None  # the window's affine (a, b, c, d, e, f): no GDAL warning


def mosaic_chunk(job: MosaicChunkJob) -> None:
    """Write one chunk of the store's band as a GeoTIFF piece (published atomically: existing means done).

    Raises:
        CorruptStoreError: the chunk cannot be decoded (the store is damaged; re-run the stage that wrote it).
    """
    import rasterio
    from rasterio.enums import Resampling

    rows, cols = job.window.slices
    try:
        array = open_data_array(job.store_uri, job.variable)
        block = np.asarray(array[rows, cols] if job.band_index is None else array[job.band_index, rows, cols])
    except OSError:
        raise  # storage trouble: worth a retry, which resumes
    except Exception as error:
        raise CorruptStoreError(
            f"{job.store_uri}: the chunk at rows {rows.start}-{rows.stop}, columns {cols.start}-{cols.stop} "
            f"cannot be read ({error}); the store is damaged. Write it again (--overwrite)."
        ) from error
    profile = {
        "driver": "GTiff",
        "width": block.shape[1],
        "height": block.shape[0],
        "count": 1,
        "dtype": block.dtype.name,
        "compress": PIECE_COMPRESSION,
        "nodata": job.nodata,  # mode overviews leave nodata pixels out, as GDAL does for the whole band
        "transform": rasterio.Affine(*job.transform or (1, 0, 0, 0, 1, 0)),  # the VRT places by pixel
    }
    with (
        publish.publishing_file(job.piece, overwrite=True) as staging,
        rasterio.open(staging, "w", **profile) as out,
    ):
        out.write(block, 1)
        if job.overviews:
            out.build_overviews(list(job.overviews), Resampling[job.overview_resampling])


def _vrt_xml(
    info: StoreInfo, jobs: list[MosaicChunkJob], staging: str, factor: int, level: int | None
) -> str:
    """VRT of the pieces (``level`` None) or of their overview ``level`` (factor ``factor``)."""
    from rasterio.dtypes import dtype_rev, typename_fwd

    options = "" if level is None else f'<OpenOptions><OOI key="OVERVIEW_LEVEL">{level}</OOI></OpenOptions>'
    sources = []
    for job in jobs:
        rows, cols = job.window.slices
        height, width = -(-(rows.stop - rows.start) // factor), -(-(cols.stop - cols.start) // factor)
        sources.append(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{os.path.relpath(job.piece, staging)}'
            f"</SourceFilename>{options}<SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="{cols.start // factor}" yOff="{rows.start // factor}" xSize="{width}" '
            f'ySize="{height}"/></SimpleSource>'
        )
    overviews = "" if level is not None else "".join(
        f'<Overview><SourceFilename relativeToVRT="1">mosaic.ovr{factor}.vrt</SourceFilename>'
        "<SourceBand>1</SourceBand></Overview>"
        for factor in (jobs[0].overviews if jobs else ())
    )  # fmt: skip
    a, b, c, d, e, f = tuple(info.geobox.affine)[:6]  # georeferenced from the start: no rasterio warning
    geo = "" if level is not None else f"<GeoTransform>{c!r},{a!r},{b!r},{f!r},{d!r},{e!r}</GeoTransform>"
    return (
        f'<VRTDataset rasterXSize="{-(-info.width // factor)}" rasterYSize="{-(-info.height // factor)}">'
        f"{geo}"
        f'<VRTRasterBand dataType="{typename_fwd[dtype_rev[info.dtype]]}" band="1">{"".join(sources)}'
        f"{overviews}</VRTRasterBand></VRTDataset>"
    )


def _pieces_vrt(info: StoreInfo, jobs: list[MosaicChunkJob], output: FileOutput) -> str:
    """A VRT that places every piece at its window: the whole band, read piece by piece.

    When the pieces carry overviews (:func:`piece_overviews`), one more VRT per overview level places the
    pieces' overview (``OVERVIEW_LEVEL`` open option) at the window divided by the factor, and the main VRT
    lists them as its overviews: GDAL's COG driver copies them instead of reading the whole band a second
    time to compute them.
    """
    factors = jobs[0].overviews if jobs else ()
    for level, factor in enumerate(factors):
        with open(os.path.join(output.staging, f"mosaic.ovr{factor}.vrt"), "w", encoding="utf-8") as handle:
            handle.write(_vrt_xml(info, jobs, output.staging, factor, level))
    path = os.path.join(output.staging, "mosaic.vrt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_vrt_xml(info, jobs, output.staging, 1, None))
    return path


def piece_overviews(info: StoreInfo) -> tuple[int, ...]:
    """Overview factors every piece builds itself: the COG's, when the chunks allow it (else none).

    A piece is one store chunk; its nearest (or mode) overview at factor ``f`` is exactly the window of the
    whole band's overview when ``f`` divides the chunk's rows and columns (no block of ``f x f`` pixels
    straddles two chunks). Chunks smaller than one COG block (512 px) are left to GDAL's COG driver too:
    with 256 px chunks the many tiny overview sources cost more than they save (1x benchmark scene: 18.6
    against 14.7 CPU s; 512 px chunks: 7.9-8.7 against 8.6-10.4).
    """
    factors = tuple(overview_factors(info.height, info.width))
    rows, cols = info.chunk_rows, info.chunk_cols
    if min(rows, cols) >= COG_BLOCK_SIZE and all(rows % f == 0 and cols % f == 0 for f in factors):
        return factors
    return ()


def _describe_vrt(path: str, info: StoreInfo, store_uri: str, band_index: int | None) -> None:
    """Give the VRT the store's georeferencing, nodata, colours, band description and tags."""
    import rasterio

    with rasterio.open(path, "r+") as vrt:
        grid = rasterio_grid_profile(info.geobox)
        if grid["crs"]:
            vrt.crs = grid["crs"]
        vrt.transform = grid["transform"]
        if info.nodata is not None:
            vrt.nodata = info.nodata
        if info.kind == "labels" and info.num_classes is not None and info.dtype == "uint8":
            vrt.write_colormap(1, class_colormap(info.num_classes))
        if info.kind == "labels":
            vrt.set_band_description(1, "class")
        elif band_index is not None:
            vrt.set_band_description(1, info.band_names[band_index])
            metadata = info.band_metadata or {}
            if "scale" in metadata:  # the input band's physical meaning: value = DN * scale + offset
                vrt.scales = (metadata["scale"][band_index],)
                vrt.offsets = (metadata["offset"][band_index],)
                vrt.units = (metadata["unit"][band_index],)
        vrt.update_tags(**cog_tags(info, store_uri))


def mosaic_to_cog(
    store_uri: str,
    cog_uri: str,
    *,
    band: int | None = None,
    overwrite: bool = False,
    overview_resampling: str = "nearest",
    show_progress: bool | None = None,
    max_pixels: int | None = None,
) -> CogSummary:
    """Write one band of the store at ``store_uri`` as a Cloud-Optimized GeoTIFF at ``cog_uri``.

    Args:
        store_uri: a finished eoseg store (label stores have one band; image stores need ``band``).
        cog_uri: the GeoTIFF to write (local path or ``s3://``).
        band: 1-based band of an image store.
        overwrite: replace an existing ``cog_uri``.
        overview_resampling: ``nearest`` (fast) or ``mode`` (majority class; better for labels).
        show_progress: terminal progress bar on/off (default: when stderr is a terminal).
        max_pixels: refuse a store of more pixels (:func:`check_single_cog_size`); None: no limit.

    Raises:
        ConfigurationError: the store has more than ``max_pixels`` pixels (before any work; the message
            points to ``--per-tile-maps``).
        OutputExistsError: ``cog_uri`` exists and ``overwrite`` is False (checked before any work).
        CorruptStoreError: a chunk of the store cannot be read (the partial output is removed).
        RuntimeError: the written file fails COG validation (nothing is left at ``cog_uri``).
        Other failures keep the finished pieces: running again resumes.
    """
    if overview_resampling not in OVERVIEW_RESAMPLINGS:
        raise ConfigurationError(
            f"overview resampling must be one of {OVERVIEW_RESAMPLINGS}, got {overview_resampling!r}"
        )
    store_uri = storage.normalise_uri(store_uri)
    info = read_store_info(store_uri)
    if max_pixels is not None:
        check_single_cog_size(info.height * info.width, limit=max_pixels, what=store_uri)
    band_index = _select_band(info, band)
    factors = piece_overviews(info)
    plan = {
        "store": store_uri,
        "store_created": info.created,
        "band": band_index,
        "grid": [info.height, info.width, info.chunk_rows, info.chunk_cols],
        "pieces": {
            "compress": PIECE_COMPRESSION,
            "overviews": list(factors),
            "resampling": overview_resampling,
        },
    }
    output = open_file_output(cog_uri, plan=plan, overwrite=overwrite)
    windows = list(info.grid.windows())
    jobs = [
        MosaicChunkJob(
            store_uri,
            info.variable,
            band_index,
            window,
            output.piece_path(index),
            factors,
            overview_resampling,
            info.nodata,
            tuple(info.geobox[window.slices].affine)[:6],
        )
        for index, window in windows
    ]

    def finalise(_: list[None]) -> CogSummary:
        vrt = _pieces_vrt(info, jobs, output)
        _describe_vrt(vrt, info, store_uri, band_index)
        levels = _write_cog(
            vrt, output, overview_resampling, overviews=bool(overview_factors(info.height, info.width)),
            sources=len(jobs) * (1 + len(factors)),
        )  # fmt: skip
        finish_file_output(output)
        return CogSummary(
            output.target, info.width, info.height, info.dtype, levels, info.nodata, info.num_classes
        )

    stage = ChunkedStage(
        label="mosaic",
        jobs=jobs,
        done=output.pieces_done([index for index, _ in windows]),
        compute=mosaic_chunk,
        finalise=finalise,
        local=True,
    )
    with discarded_on_bad_input(output):
        summary = run_stage(stage, show_progress=show_progress)
    logger.info(
        "wrote %s (%d x %d, overviews %s)",
        summary.uri,
        info.width,
        info.height,
        list(summary.overview_levels),
    )
    return summary


def _write_cog(
    source: str, output: FileOutput, overview_resampling: str, *, overviews: bool, sources: int = 0
) -> tuple[int, ...]:
    """Lay out ``source`` as a validated COG and publish it at the output's target; returns its overviews.

    ``sources``: how many datasets the VRT ``source`` reads (pieces, and each piece once more per overview
    level it carries). GDAL keeps at most 100 of them open (``GDAL_MAX_DATASET_POOL_SIZE``) and the COG
    driver reads the source in several passes (overviews, then the full resolution), so with more than
    that they would be closed and re-opened over and over; the pool is sized to hold them all.

    Raises:
        RuntimeError: the written file fails COG validation (nothing is published).
    """
    import rasterio
    import rasterio.shutil
    from rio_cogeo.cogeo import cog_validate

    with publish.publishing_file(output.target, overwrite=output.overwrite) as staging:
        creation = {
            "BLOCKSIZE": COG_BLOCK_SIZE, "COMPRESS": "DEFLATE", "PREDICTOR": "YES", "LEVEL": 6,
            "BIGTIFF": "IF_SAFER", "OVERVIEWS": "AUTO" if overviews else "NONE",
            "OVERVIEW_RESAMPLING": overview_resampling.upper(), "RESAMPLING": "NEAREST",
            "NUM_THREADS": "ALL_CPUS",
        }  # fmt: skip
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS", GDAL_MAX_DATASET_POOL_SIZE=max(100, sources + 16)):
            rasterio.shutil.copy(source, staging, driver="COG", **creation)
        valid, errors, warnings = cog_validate(staging, quiet=True)
        if not valid or errors or warnings:
            raise RuntimeError(
                f"{output.target}: the written file is not a valid COG (errors: {errors}; "
                f"warnings: {warnings}); nothing was published. Please report this."
            )
        with rasterio.open(staging) as written:
            return tuple(written.overviews(1))
