"""Mosaic stage: one band of a store becomes a Cloud-Optimized GeoTIFF with the scene's georeferencing.

The stage contract (:mod:`eoseg.compute.stage`): the map is cut into pieces of ``R x R`` pixels (``R`` a
multiple of 1024) and each piece job, on the Dask workers, reads its window from the store and has GDAL
encode it exactly as the final COG's tiles: 512 x 512, DEFLATE with the horizontal (or floating-point)
predictor, nodata, and internal overviews at the COG's factors by nearest or mode resampling
(:mod:`eoseg.mosaic.pieces`). The pieces go to the output's staging folder beside the target
(:class:`eoseg.store.lifecycle.FileOutput`; an S3 prefix for an ``s3://`` target, so workers anywhere can
write them); a piece that exists is done, so an interrupted mosaic resumes. The finalise step writes the
coarse overview levels (where a piece's overview is less than one tile) as one GeoTIFF per level from a
VRT of the pieces' overviews, then :mod:`eoseg.mosaic.layout` writes the COG: a tifffile header whose tag
values come from a tiny GeoTIFF that GDAL writes with the map's metadata (CRS, transform, nodata, class
colour table, band description, tags), followed by every tile's compressed bytes copied verbatim from the
pieces and level files, streamed (for S3, a multipart upload: no local copy of the file). The result is
validated with rio-cogeo (over ``/vsis3/`` on S3) before it is published
(:func:`eoseg.store.lifecycle.finish_file_output`: a rename, or a server-side S3 copy).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from eoseg import __version__
from eoseg.compute.stage import ChunkedStage, run_stage
from eoseg.errors import BandCountError, ConfigurationError
from eoseg.geometry import rasterio_grid_profile
from eoseg.io import storage
from eoseg.mosaic import layout, pieces
from eoseg.mosaic.colors import class_colormap
from eoseg.settings import load_settings
from eoseg.store.layout import StoreInfo, read_store_info
from eoseg.store.lifecycle import FileOutput, discarded_on_bad_input, finish_file_output, open_file_output

logger = logging.getLogger("eoseg.mosaic.cog")
COG_BLOCK_SIZE = pieces.COG_BLOCK_SIZE
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


def describe_dataset(dataset: Any, info: StoreInfo, store_uri: str, band_index: int | None) -> None:
    """Give an open rasterio dataset (mode ``w`` or ``r+``) the map's georeferencing, nodata, colours,
    band description, scale/offset/unit and tags: everything the COG says besides its pixels."""
    grid = rasterio_grid_profile(info.geobox)
    if grid["crs"]:
        dataset.crs = grid["crs"]
    dataset.transform = grid["transform"]
    if info.nodata is not None:
        dataset.nodata = info.nodata
    if info.kind == "labels" and info.num_classes is not None and info.dtype == "uint8":
        dataset.write_colormap(1, class_colormap(info.num_classes))
    if info.kind == "labels":
        dataset.set_band_description(1, "class")
    elif band_index is not None:
        dataset.set_band_description(1, info.band_names[band_index])
        metadata = info.band_metadata or {}
        if "scale" in metadata:  # the input band's physical meaning: value = DN * scale + offset
            dataset.scales = (metadata["scale"][band_index],)
            dataset.offsets = (metadata["offset"][band_index],)
            dataset.units = (metadata["unit"][band_index],)
    dataset.update_tags(**cog_tags(info, store_uri))


def _template(info: StoreInfo, store_uri: str, band_index: int | None) -> layout.TiffTemplate:
    """The COG's tag values, from a 16 x 16 GeoTIFF that GDAL writes with the map's metadata."""
    import rasterio

    profile = pieces.tile_creation(info.dtype) | {
        "width": 16, "height": 16, "count": 1, "dtype": info.dtype, "blockxsize": 16, "blockysize": 16,
        "transform": rasterio_grid_profile(info.geobox)["transform"],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="eoseg-template-") as scratch:
        path = os.path.join(scratch, "template.tif")
        with rasterio.open(path, "w", **profile) as dataset:
            describe_dataset(dataset, info, store_uri, band_index)
        return layout.read_template(path)


def _level_shapes(info: StoreInfo, factors: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(height, width)`` of the full resolution and each overview, rounded up (as gdaladdo rounds)."""
    return [(-(-info.height // f), -(-info.width // f)) for f in (1, *factors)]


def _tile_refs(
    info: StoreInfo, factors: tuple[int, ...], size: int, jobs: list[pieces.PieceJob],
    tables: list[pieces.TileTable], levels: dict[int, tuple[str, pieces.TileTable]],
) -> list[list[layout.TileRef]]:  # fmt: skip
    """Per level, every COG tile's bytes: in a piece (levels whole in pieces) or in a level file."""
    block = pieces.COG_BLOCK_SIZE
    across = -(-info.width // size)
    refs: list[list[layout.TileRef]] = []
    for level, (height, width) in enumerate(_level_shapes(info, factors)):
        tiles_y, tiles_x = -(-height // block), -(-width // block)
        if level in levels:
            uri, table = levels[level]
            refs.append([(uri, o, c) for o, c in zip(*table[0], strict=True)])
            continue
        span = size // (1, *factors)[level] // block  # tiles across a (full) piece at this level
        level_refs = []
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                index = (ty // span) * across + tx // span
                piece_cols = -(-jobs[index].window.width // (1, *factors)[level])
                offsets, counts = tables[index][level]
                local = (ty % span) * -(-piece_cols // block) + tx % span
                level_refs.append((jobs[index].piece, offsets[local], counts[local]))
        refs.append(level_refs)
    return refs


def pieces_for_workers(store_uri: str, cog_uri: str) -> int:
    """How many pieces of the mosaic of ``store_uri`` into ``cog_uri`` Dask workers can write: the store's
    chunks when the COG goes to S3 (its pieces are staged on S3, where any worker can write them), else 0
    (a local COG's pieces land on this machine's disk: threads of this process write them). For
    :func:`eoseg.compute.cluster.stage_cluster`: no cluster is started or used for a local COG."""
    if not storage.is_s3(storage.normalise_uri(cog_uri)):
        return 0
    info = read_store_info(storage.normalise_uri(store_uri))
    return len(info.grid)


def mosaic_to_cog(
    store_uri: str,
    cog_uri: str,
    *,
    band: int | None = None,
    overwrite: bool = False,
    overview_resampling: str = "nearest",
    show_progress: bool | None = None,
    max_pixels: int | None = None,
    client: Any = None,
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
        client: the ``distributed.Client`` whose workers write the pieces (default: the active one; for
            a local target the pieces are written on threads of this process, which owns the disk).

    Raises:
        ConfigurationError: the store has more than ``max_pixels`` pixels (before any work; the message
            points to ``--per-tile-maps``).
        OutputExistsError: ``cog_uri`` exists and ``overwrite`` is False (checked before any work).
        CorruptStoreError: a chunk of the store cannot be read (the partial output is removed).
        RuntimeError: the written file fails COG validation (nothing is left at ``cog_uri``).
        Other failures keep the finished pieces: running again resumes.

    Memory: one piece (``R x R`` values, R >= 1024) per worker thread; the assembly holds one batch of
    tiles (:data:`eoseg.mosaic.layout.BATCH_BYTES`) and, for S3, one upload part.
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
    factors = tuple(overview_factors(info.height, info.width))
    target_size = load_settings().mosaic_piece_size
    size = pieces.piece_size(info.chunk_rows, info.chunk_cols, factors, target=target_size)
    plan = {
        "store": store_uri,
        "store_created": info.created,
        "band": band_index,
        "grid": [info.height, info.width, info.chunk_rows, info.chunk_cols],
        "pieces": {
            "format": pieces.PIECE_FORMAT,
            "size": size,
            "creation": pieces.tile_creation(info.dtype),
            "overviews": list(factors),
            "resampling": overview_resampling,
        },
    }
    output = open_file_output(cog_uri, plan=plan, overwrite=overwrite, inputs=[store_uri])
    windows = pieces.piece_windows(info.height, info.width, size)
    jobs = [
        pieces.PieceJob(
            store_uri,
            info.variable,
            band_index,
            window,
            output.piece_path(index),
            info.dtype,
            factors,
            overview_resampling,
            info.nodata,
            tuple(info.geobox[window.slices].affine)[:6],
        )
        for index, window in windows
    ]

    def finalise(tables: list[pieces.TileTable | None]) -> CogSummary:
        assert all(table is not None for table in tables)  # recall gives the done pieces' tables
        levels = _write_levels(info, factors, size, jobs, output)
        refs = _tile_refs(info, factors, size, jobs, [t for t in tables if t is not None], levels)
        header = layout.cog_header(
            _template(info, store_uri, band_index),
            _level_shapes(info, factors),
            [[count for _, _, count in level] for level in refs],
            COG_BLOCK_SIZE,
        )
        assembled = output.assembly_path("assembled.tif")
        layout.assemble(assembled, header, refs)
        _validate(assembled, output.target)
        finish_file_output(output, assembled)
        return CogSummary(
            output.target, info.width, info.height, info.dtype, factors, info.nodata, info.num_classes
        )

    stage = ChunkedStage(
        label="mosaic",
        jobs=jobs,
        done=output.pieces_done([index for index, _ in windows]),
        compute=pieces.write_piece,
        recall=pieces.recall_piece,
        finalise=finalise,
        local=not storage.is_s3(output.staging),  # local pieces must land on this machine's disk
    )
    with discarded_on_bad_input(output):
        summary = run_stage(stage, client=client, show_progress=show_progress)
    logger.info(
        "wrote %s (%d x %d, overviews %s)",
        summary.uri,
        info.width,
        info.height,
        list(summary.overview_levels),
    )
    return summary


def _write_levels(
    info: StoreInfo, factors: tuple[int, ...], size: int, jobs: list[pieces.PieceJob], output: FileOutput
) -> dict[int, tuple[str, pieces.TileTable]]:
    """Write each coarse level (less than one tile per piece) as one GeoTIFF from the pieces' overviews.

    Returns:
        Per level index (1 = factor 2): the level file's URI and tile table.
    """
    whole = pieces.piece_levels(size, factors)
    placed = [(job.piece, job.window) for job in jobs]
    levels = {}
    with storage.gdal_env(output.staging):
        for level in range(whole, len(factors) + 1):
            factor = factors[level - 1]
            vrt = pieces.pieces_vrt(
                placed, info.height, info.width, info.dtype, factor, level - 1, tuple(info.geobox.affine)[:6]
            )
            uri = output.assembly_path(f"level-{factor}.tif")
            levels[level] = (uri, pieces.write_level(vrt, uri, info.dtype, sources=len(jobs)))
    return levels


def _validate(path: str, target: str) -> None:
    """Refuse a file rio-cogeo finds invalid or warns about.

    Raises:
        RuntimeError: errors or warnings (nothing is published).
    """
    from rio_cogeo.cogeo import cog_validate

    with storage.gdal_env(path):
        valid, errors, warnings = cog_validate(storage.gdal_path(path), quiet=True)
    if not valid or errors or warnings:
        raise RuntimeError(
            f"{target}: the written file is not a valid COG (errors: {errors}; warnings: {warnings}); "
            "nothing was published. Please report this."
        )
