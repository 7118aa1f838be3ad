"""The mosaic's pieces: regions of the map encoded exactly as the final COG's tiles, written in parallel.

A piece covers ``R x R`` pixels of the map (``R`` a multiple of 1024, 4096 by default: :func:`piece_size`;
partial at the map's right and bottom edges), read from the store across as many chunks as it spans. GDAL
writes it as a tiled GeoTIFF with the COG's encoding (:data:`TILE_CREATION`: 512 x 512 tiles, DEFLATE level
6 with the horizontal or floating-point predictor) and internal overviews at every COG factor, compressed
the same way. The piece's tiles at the levels where ``R / f`` is a whole number of 512 px tiles (full
resolution and factor 2 at least) *are* the COG's tiles at that place, byte for byte;
:mod:`eoseg.mosaic.layout` copies them. Coarser levels are written afterwards as one GeoTIFF per level from
the pieces' overviews (:func:`write_level`), encoded the same way.

Each piece job returns the piece's tile table (offsets and byte counts of every tile of every level,
from its header, read with tifffile), so the assembly reads no piece header again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from eoseg.errors import ConfigurationError, CorruptStoreError
from eoseg.geometry import Window
from eoseg.io import publish, storage
from eoseg.store.layout import open_data_array

COG_BLOCK_SIZE = 512
PIECE_FORMAT = "cog-tiles-1"
"""Recorded in the mosaic's plan: pieces of another format (older eoseg) are never reused."""

TileTable = tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
"""Per level (full resolution first): the tiles' byte offsets and byte counts in their file, row-major."""


def predictor_for(dtype: str) -> int:
    """TIFF predictor: 2 (horizontal differencing) for integers, 3 (floating point) for floats."""
    return 3 if np.dtype(dtype).kind == "f" else 2


def tile_creation(dtype: str) -> dict[str, object]:
    """GDAL GTiff creation options of every piece and level file: the COG's tile encoding."""
    return {
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": COG_BLOCK_SIZE,
        "blockysize": COG_BLOCK_SIZE,
        "compress": "DEFLATE",
        "zlevel": 6,
        "predictor": predictor_for(dtype),
        "sparse_ok": False,
    }


# Internal overviews in 512 px tiles (GDAL's default is 128) with the same DEFLATE level as the main image.
OVERVIEW_CONFIG = {"GDAL_TIFF_OVR_BLOCKSIZE": COG_BLOCK_SIZE, "ZLEVEL_OVERVIEW": 6}


def piece_size(chunk_rows: int, chunk_cols: int, factors: tuple[int, ...], *, target: int = 4096) -> int:
    """Side of a piece in pixels: the chunk size when it is a multiple of ``target`` (a multiple of 1024,
    the ``EOSEG_MOSAIC_PIECE_SIZE`` setting, default 4096), else ``target``.

    Large pieces cost less: per-piece work (GDAL datasets, the tile table) is paid less often, and the
    pieces' own overviews cover more levels in whole 512 px tiles, leaving fewer coarse levels to write
    afterwards. On the 73 MP benchmark scene (``results/tile_mosaic.md``) ``mosaic_to_cog`` took 5.0 s
    (6.9 CPU s) with 1024 px pieces, 3.5 s (5.7) with 2048 and 2.8 s (4.8) with 4096, against 3.7-4.8 s
    for ``gdal_translate -of COG`` in the same runs; peak memory 245, 270 and 400 MiB. Smaller pieces
    spread a small map over more workers and hold less memory. Raised to a multiple of the largest
    overview factor, so that no ``f x f`` block of pixels straddles two pieces: each piece's overviews
    are then exactly the whole band's at its place.
    """
    if target % 1024:
        raise ConfigurationError(f"the mosaic piece size must be a multiple of 1024 px, got {target}")
    size = chunk_rows if chunk_rows == chunk_cols and chunk_rows % target == 0 else target
    largest = max(factors, default=1)
    return -(-size // largest) * largest if size % largest else size


def piece_levels(size: int, factors: tuple[int, ...]) -> int:
    """How many levels (full resolution first) of a piece of ``size`` px are whole 512 px COG tiles."""
    return 1 + sum(1 for f in factors if (size // f) % COG_BLOCK_SIZE == 0)


def piece_windows(height: int, width: int, size: int) -> list[tuple[tuple[int, int], Window]]:
    """The pieces of a ``height x width`` map, row-major: ``((row, col), window)``."""
    return [
        (
            (row, col),
            Window(row * size, col * size, min(size, height - row * size), min(size, width - col * size)),
        )
        for row in range(-(-height // size))
        for col in range(-(-width // size))
    ]


@dataclass(frozen=True)
class PieceJob:
    """One piece: which store band and window, the piece file, and how to build its overviews.

    ``nodata``: the store's nodata, set on the piece so that mode overviews leave it out as GDAL does for
    the whole band; ``transform``: the window's affine ``(a, b, c, d, e, f)``.
    """

    store_uri: str
    variable: str
    band_index: int | None
    window: Window
    piece: str
    dtype: str
    overviews: tuple[int, ...]
    overview_resampling: str
    nodata: float | int | None
    transform: tuple[float, ...]


def _read_window(job: PieceJob) -> np.ndarray:
    rows, cols = job.window.slices
    try:
        array = open_data_array(job.store_uri, job.variable)
        return np.asarray(array[rows, cols] if job.band_index is None else array[job.band_index, rows, cols])
    except OSError:
        raise  # storage trouble: worth a retry, which resumes
    except Exception as error:
        raise CorruptStoreError(
            f"{job.store_uri}: the window at rows {rows.start}-{rows.stop}, columns {cols.start}-{cols.stop} "
            f"cannot be read ({error}); the store is damaged. Write it again (--overwrite)."
        ) from error


def tile_table(path: str) -> TileTable:
    """Tile offsets and byte counts of every level of the tiled GeoTIFF at ``path`` (local or ``s3://``)."""
    import tifffile

    with storage.open_file(path, "rb") as handle, tifffile.TiffFile(handle) as tiff:
        return tuple(
            (tuple(int(o) for o in page.dataoffsets), tuple(int(c) for c in page.databytecounts))
            for page in tiff.pages
        )


def write_piece(job: PieceJob) -> TileTable:
    """Write one piece (published atomically: existing means done); returns its tile table.

    Raises:
        CorruptStoreError: the window cannot be decoded (the store is damaged: write it again).
    """
    import rasterio
    from rasterio.enums import Resampling

    block = _read_window(job)
    profile = tile_creation(job.dtype) | {
        "width": block.shape[1],
        "height": block.shape[0],
        "count": 1,
        "dtype": job.dtype,
        "nodata": job.nodata,
        "transform": rasterio.Affine(*job.transform),
    }
    with tempfile.TemporaryDirectory(prefix="eoseg-piece-") as scratch:
        local = os.path.join(scratch, "piece.tif")
        # GDAL compresses in its own threads: a rasterio close or overview build holds the GIL meanwhile
        threads = {"GDAL_NUM_THREADS": "ALL_CPUS"}
        with (
            rasterio.Env(**OVERVIEW_CONFIG, **threads),
            rasterio.open(local, "w", num_threads="ALL_CPUS", **profile) as out,
        ):
            out.write(block, 1)
            if job.overviews:
                out.build_overviews(list(job.overviews), Resampling[job.overview_resampling])
        table = tile_table(local)
        publish.publish_file(local, job.piece, overwrite=True)
    return table


def recall_piece(job: PieceJob) -> TileTable:
    """The tile table of a piece an earlier run wrote."""
    return tile_table(job.piece)


def pieces_vrt(
    pieces: list[tuple[str, Window]],
    height: int,
    width: int,
    dtype: str,
    factor: int,
    level: int,
    transform: tuple[float, ...],
) -> str:
    """VRT (XML text, absolute GDAL paths) placing overview ``level`` (factor ``factor``) of every piece.

    ``transform``: the map's affine ``(a, b, c, d, e, f)``; the VRT's pixels are ``factor`` times larger.
    """
    from rasterio.dtypes import dtype_rev, typename_fwd

    sources = []
    for path, window in pieces:
        rows, cols = window.slices
        h, w = -(-(rows.stop - rows.start) // factor), -(-(cols.stop - cols.start) // factor)
        sources.append(
            f"<SimpleSource><SourceFilename>{storage.gdal_path(path)}</SourceFilename>"
            f'<OpenOptions><OOI key="OVERVIEW_LEVEL">{level}</OOI></OpenOptions><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{cols.start // factor}" yOff="{rows.start // factor}" xSize="{w}" ySize="{h}"/>'
            "</SimpleSource>"
        )
    a, b, c, d, e, f = transform[:6]
    scaled = (c, a * factor, b * factor, f, d * factor, e * factor)
    geo = f"<GeoTransform>{','.join(repr(value) for value in scaled)}</GeoTransform>"
    return (
        f'<VRTDataset rasterXSize="{-(-width // factor)}" rasterYSize="{-(-height // factor)}">{geo}'
        f'<VRTRasterBand dataType="{typename_fwd[dtype_rev[dtype]]}" band="1">{"".join(sources)}'
        "</VRTRasterBand></VRTDataset>"
    )


def write_level(vrt: str, target: str, dtype: str, *, sources: int) -> TileTable:
    """Write one coarse level from the pieces' VRT as a tiled GeoTIFF at ``target``; its tile table.

    ``sources``: datasets the VRT reads; GDAL's open-dataset pool is sized to hold them all.
    """
    import rasterio
    import rasterio.shutil

    config = storage.gdal_config_for(target) | {
        "GDAL_NUM_THREADS": "ALL_CPUS",
        "GDAL_MAX_DATASET_POOL_SIZE": max(100, sources + 16),
    }
    options = {k: v for k, v in tile_creation(dtype).items() if k != "driver"}
    with tempfile.TemporaryDirectory(prefix="eoseg-level-") as scratch:
        local = os.path.join(scratch, "level.tif")
        with rasterio.Env(**config), rasterio.open(vrt) as source:
            rasterio.shutil.copy(source, local, driver="GTiff", num_threads="ALL_CPUS", **options)
        table = tile_table(local)
        publish.publish_file(local, target, overwrite=True)
    return table
