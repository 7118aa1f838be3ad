"""The tile stage's chunks for a scene of many files: each chunk is read from the input tiles it overlaps.

A chunk of the union grid (:class:`eoseg.scene.sources.SceneSources`) is assembled from windowed reads of
just the input tiles it touches (never a whole tile, unless the tile is smaller than the chunk); pixels
no tile covers are gaps: invalid in the store's ``valid`` variable, and the scene's nodata (0 when it
has none) in ``image``. Where tiles overlap, the first tile of the listing that has data at a pixel wins.

The per-file read is one function, :func:`read_tile_window` (each file's validity from
:func:`eoseg.scene.validity.read_valid_window`), and the gap fill and overlap rule one,
:func:`read_mosaic_window`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eoseg.errors import CorruptSceneError
from eoseg.geometry import Window
from eoseg.io import storage
from eoseg.scene.sources import SceneSources
from eoseg.scene.validity import read_valid_window
from eoseg.store.layout import VALID_VARIABLE, open_data_array
from eoseg.store.lifecycle import mark_chunk_done
from eoseg.tile.stage import BandMoments, TileChunkJob, _open_scene_cached


@dataclass(frozen=True)
class TilePiece:
    """The part of one input file that lands in one chunk.

    Attributes:
        uri: the input file.
        source: the part in the file's own pixels.
        target: the same part in the chunk's pixels (relative to the chunk's first pixel).
    """

    uri: str
    source: Window
    target: Window


@dataclass(frozen=True)
class MultiFileChunkJob(TileChunkJob):
    """A chunk of a many-file scene: its pieces, in priority order (first wins), and how to fill gaps.

    ``scene_uri`` describes the whole input (:func:`eoseg.scene.sources.describe_inputs`).
    """

    band_count: int = 1
    dtype: str = "uint8"
    pieces: tuple[TilePiece, ...] = ()


def read_tile_window(uri: str, window: Window, *, job: TileChunkJob) -> tuple[np.ndarray, np.ndarray]:
    """``(block, valid)`` of ``window`` of the file ``uri``: ``(bands, rows, cols)`` in the file's pixel type
    and ``(rows, cols)`` bool (:func:`eoseg.scene.validity.read_valid_window`: nodata, alpha, masks, NaN).

    Raises:
        CorruptSceneError: the read fails (truncated or corrupt file), naming the file and the window.
    """
    rows, cols = window.slices
    try:
        with storage.gdal_env(uri):
            dataset = _open_scene_cached(uri, job.warp_gcps)
            return read_valid_window(
                dataset, window.to_rasterio(), indexes=job.band_indexes or None, fill=job.nodata
            )
    except Exception as error:
        raise CorruptSceneError(
            f"{uri}: reading pixels at rows {rows.start}-{rows.stop}, columns {cols.start}-{cols.stop} "
            f"failed ({error}); the file is truncated or corrupt. Re-download or re-export it."
        ) from error


def read_mosaic_window(job: MultiFileChunkJob) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's ``(block, valid)``: gaps are invalid and hold nodata (0 without one); where tiles
    overlap, the first tile with data at a pixel wins."""
    fill = 0 if job.nodata is None else job.nodata
    block = np.full((job.band_count, job.window.height, job.window.width), fill, dtype=job.dtype)
    valid = np.zeros((job.window.height, job.window.width), dtype=bool)
    for piece in reversed(job.pieces):  # the first tile is painted last, so it wins where it has data
        pixels, piece_valid = read_tile_window(piece.uri, piece.source, job=job)
        target = piece.target.slices
        # A piece's valid pixels replace what is there; its invalid ones only fill what holds no data yet.
        replace = piece_valid | ~valid[target]
        block[(slice(None), *target)][:, replace] = pixels[:, replace]
        valid[target] |= piece_valid
    return block, valid


def tile_multi_file_chunk(job: MultiFileChunkJob) -> BandMoments:
    """Assemble one chunk from its input tiles, write it and its validity, flag it done, return moments."""
    block, valid = read_mosaic_window(job)
    rows, cols = job.window.slices
    open_data_array(job.store_uri, "image", mode="r+")[:, rows, cols] = block
    open_data_array(job.store_uri, VALID_VARIABLE, mode="r+")[rows, cols] = valid.astype(np.uint8)
    mark_chunk_done(job.store_uri, job.chunk_index)
    return BandMoments.of_block(block, valid)


def multi_file_jobs(
    sources: SceneSources, store_uri: str, windows: list[tuple[tuple[int, int], Window]]
) -> list[MultiFileChunkJob]:
    """One job per chunk window of the union grid, naming only the tiles that window overlaps."""
    scene = sources.scene
    jobs = []
    for index, window in windows:
        pieces = tuple(
            TilePiece(tile.uri, shared.relative_to(tile.window), shared.relative_to(window))
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
