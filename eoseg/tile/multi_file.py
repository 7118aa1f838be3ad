"""The tile stage's chunks for a scene of many files: each chunk is read from the input tiles it overlaps.

A chunk of the union grid (:class:`eoseg.scene.sources.SceneSources`) is assembled from windowed reads of
just the input tiles it touches (never a whole tile, unless the tile is smaller than the chunk); pixels
no tile covers are gaps: invalid in the store's ``valid`` variable, and the scene's nodata (0 when it
has none) in ``image``. Where tiles overlap, the first tile of the listing that has data at a pixel wins.

The per-file read is one function, :func:`eoseg.tile.stage.read_tile_window` (each file's validity from
:func:`eoseg.scene.validity.read_valid_window`), and the gap fill and overlap rule one,
:func:`read_mosaic_window`. A tile placed with ``--resample`` (:class:`WarpTarget`) is read through a
rasterio ``WarpedVRT`` onto its window of the union grid, with the same validity rules (outside the
tile's footprint: an alpha band when it has no nodata value, so those pixels are invalid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from eoseg.geometry import Window
from eoseg.io import storage
from eoseg.scene.sources import SceneSources
from eoseg.scene.validity import read_valid_window
from eoseg.tile.stage import (
    BandMoments,
    TileChunkJob,
    read_tile_window,
    thread_cached_dataset,
    write_tile_chunk,
)


@dataclass(frozen=True)
class WarpTarget:
    """The grid a tile on another grid is warped onto: its window of the union grid.

    Attributes:
        crs_wkt: the union grid's CRS (WKT).
        transform: the window's affine transform ``(a, b, c, d, e, f)``.
        height: window rows.
        width: window columns.
        resampling: GDAL resampling method name (``nearest``, ``bilinear``, ...).
    """

    crs_wkt: str
    transform: tuple[float, ...]
    height: int
    width: int
    resampling: str


@dataclass(frozen=True)
class TilePiece:
    """The part of one input file that lands in one chunk.

    Attributes:
        uri: the input file.
        source: the part in the file's own pixels.
        target: the same part in the chunk's pixels (relative to the chunk's first pixel).
        warp: for a tile on another grid, the union-grid window it is warped onto (``source`` is then in
            that window's pixels); None: ``source`` is in the file's own pixels.
    """

    uri: str
    source: Window
    target: Window
    warp: WarpTarget | None = None


def _read_warped(piece: TilePiece, job: TileChunkJob) -> tuple[np.ndarray, np.ndarray]:
    """``(block, valid)`` of ``piece.source`` of the tile warped onto its union-grid window (one
    ``WarpedVRT`` per thread and tile, kept open like the files:
    :func:`eoseg.tile.stage.thread_cached_dataset`)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    assert piece.warp is not None
    target = piece.warp

    def open_warped() -> Any:
        with storage.gdal_env(piece.uri):
            dataset = rasterio.open(storage.gdal_path(piece.uri))
            return WarpedVRT(
                dataset, crs=target.crs_wkt, transform=Affine(*target.transform), width=target.width,
                height=target.height, resampling=Resampling[target.resampling],
                add_alpha=dataset.nodata is None,
            )  # fmt: skip

    warped = thread_cached_dataset(("warped", piece.uri, target), open_warped)
    with storage.gdal_env(piece.uri):
        return read_valid_window(
            warped, piece.source.to_rasterio(), indexes=job.band_indexes or None, fill=job.nodata
        )


@dataclass(frozen=True)
class MultiFileChunkJob(TileChunkJob):
    """A chunk of a many-file scene: its pieces, in priority order (first wins), and how to fill gaps.

    ``scene_uri`` describes the whole input (:func:`eoseg.scene.sources.describe_inputs`).
    """

    band_count: int = 1
    dtype: str = "uint8"
    pieces: tuple[TilePiece, ...] = ()


def read_mosaic_window(job: MultiFileChunkJob) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's ``(block, valid)``: gaps are invalid and hold nodata (0 without one); where tiles
    overlap, the first tile with data at a pixel wins."""
    whole = Window(0, 0, job.window.height, job.window.width)
    if len(job.pieces) == 1 and job.pieces[0].warp is None and job.pieces[0].target == whole:
        return read_tile_window(job.pieces[0].uri, job.pieces[0].source, job=job)  # one file fills the chunk
    fill = 0 if job.nodata is None else job.nodata
    block = np.full((job.band_count, job.window.height, job.window.width), fill, dtype=job.dtype)
    valid = np.zeros((job.window.height, job.window.width), dtype=bool)
    for piece in reversed(job.pieces):  # the first tile is painted last, so it wins where it has data
        if piece.warp is None:
            pixels, piece_valid = read_tile_window(piece.uri, piece.source, job=job)
        else:
            pixels, piece_valid = _read_warped(piece, job)
        target = piece.target.slices
        covered = valid[target]
        # A piece's valid pixels replace what is there; its invalid ones only fill what holds no data yet.
        # Where nothing holds data yet (the usual case: tiles that do not overlap) that is a plain copy;
        # ``np.copyto(where=)`` paints in place (boolean fancy indexing tripled the chunk's time).
        if covered.any():
            np.copyto(block[(slice(None), *target)], pixels, where=piece_valid | ~covered)
        else:
            block[(slice(None), *target)] = pixels
        covered |= piece_valid
    return block, valid


def tile_multi_file_chunk(job: MultiFileChunkJob) -> BandMoments:
    """Assemble one chunk from its input tiles, write it and its validity, flag it done, return moments."""
    return write_tile_chunk(job, *read_mosaic_window(job))


def multi_file_jobs(
    sources: SceneSources, store_uri: str, windows: list[tuple[tuple[int, int], Window]]
) -> list[MultiFileChunkJob]:
    """One job per chunk window of the union grid, naming only the tiles that window overlaps."""
    scene = sources.scene
    warps = {
        tile.uri: WarpTarget(
            scene.crs_wkt or "",
            tuple(scene.geobox.affine @ Affine.translation(tile.window.col_off, tile.window.row_off))[:6],
            tile.window.height,
            tile.window.width,
            tile.resampling,
        )
        for tile in sources.tiles
        if tile.resampling is not None
    }
    jobs = []
    for index, window in windows:
        pieces = tuple(
            TilePiece(
                tile.uri, shared.relative_to(tile.window), shared.relative_to(window), warps.get(tile.uri)
            )
            for tile, shared in sources.overlapping(window)
        )
        jobs.append(
            MultiFileChunkJob(
                scene.uri,
                store_uri,
                index,
                window,
                scene.nodata,
                scene.band_indexes,
                scene.warp_gcps,
                scene.band_count,
                scene.dtype,
                pieces,
            )
        )
    return jobs
