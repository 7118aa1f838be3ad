"""Tile stage: a GeoTIFF (local or ``s3://``) becomes a chunked Zarr v3 store, window by window.

The scene is never read whole: each Dask task reads one chunk-sized window of the model bands with
rasterio, with its validity (:func:`eoseg.scene.validity.read_valid_window`: nodata, NaN, alpha, masks,
sidecars), and writes both to the matching Zarr chunks (``image``, where each band's own invalid pixels
hold the scene's nodata value when it has one, and ``valid``), then flags the chunk done. Per-band
statistics of valid pixels are gathered on the way (training normalises with them). Where the store is
written, and whether an interrupted write is resumed, is decided by :mod:`eoseg.store.lifecycle`; the
chunks run through the stage contract (:mod:`eoseg.compute.stage`): only chunks not flagged done are
read from the scene, the moments of the others are recalled from the store.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from eoseg.compute.stage import ChunkedStage, run_stage
from eoseg.errors import ConfigurationError, CorruptSceneError, EmptySceneError, reason
from eoseg.geometry import Window
from eoseg.io import storage
from eoseg.scene.inspect import SceneInfo, open_scene_dataset
from eoseg.scene.sources import SceneSources, open_scene_sources
from eoseg.scene.validity import read_valid_window
from eoseg.scene.validity import valid_pixel_mask as valid_pixel_mask  # re-exported (layout-1 rule)
from eoseg.store.layout import VALID_VARIABLE, StoreInfo, open_data_array, write_chunk
from eoseg.store.lifecycle import (
    discarded_on_bad_input,
    finish_store_output,
    mark_chunk_done,
    open_store_output,
)

logger = logging.getLogger("eoseg.tile.stage")
DEFAULT_CHUNK_SIZE = 1024


@dataclass(frozen=True)
class BandMoments:
    """Sums over valid pixels of one chunk, per band; add them up across chunks."""

    count: int
    total: np.ndarray
    total_sq: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def of_block(cls, block: np.ndarray, valid: np.ndarray) -> BandMoments:
        bands = block.shape[0]
        count = int(np.count_nonzero(valid))
        if count == 0:
            return cls(0, np.zeros(bands), np.zeros(bands), np.full(bands, np.inf), np.full(bands, -np.inf))
        if block.dtype in (np.uint8, np.uint16, np.int8, np.int16):
            return cls._of_integer_block(block, valid, count)
        values = block[:, valid].astype(np.float64)
        return cls(count, values.sum(1), (values**2).sum(1), values.min(1), values.max(1))

    @classmethod
    def _of_integer_block(cls, block: np.ndarray, valid: np.ndarray, count: int) -> BandMoments:
        """Exact moments of 8/16-bit pixels in integer arithmetic: each square fits the next wider type
        (255**2 < 2**16, 65535**2 < 2**32), and sums are taken by :func:`_exact_sum`. About half the
        time of per-band histograms (``np.bincount`` widens every value to 64 bits) and a fifth of
        float64 sums (benchmarks/results/tile_mosaic.md, tile breakdown: band moments)."""
        signed = block.dtype.kind == "i"
        square_type = {1: np.int16 if signed else np.uint16, 2: np.int32 if signed else np.uint32}
        partial_type, wide_type = (np.int32, np.int64) if signed else (np.uint32, np.uint64)
        bands = block.shape[0]
        total, total_sq = np.empty(bands), np.empty(bands)
        minimum, maximum = np.empty(bands), np.empty(bands)
        everything_valid = count == valid.size
        for band in range(bands):
            values = block[band].ravel() if everything_valid else block[band][valid]
            squares = np.square(values, dtype=square_type[block.dtype.itemsize])
            total[band] = _exact_sum(values, partial_type)
            # An 8-bit square is < 2**14 (signed) or 2**16: 2**16 of them fit 32 bits; 16-bit ones do not.
            total_sq[band] = _exact_sum(squares, partial_type if block.dtype.itemsize == 1 else wide_type)
            minimum[band], maximum[band] = values.min(), values.max()
        return cls(count, total, total_sq, minimum, maximum)

    def __add__(self, other: BandMoments) -> BandMoments:
        return BandMoments(
            self.count + other.count,
            self.total + other.total,
            self.total_sq + other.total_sq,
            np.minimum(self.minimum, other.minimum),
            np.maximum(self.maximum, other.maximum),
        )

    def summary(self) -> dict[str, list[float]]:
        mean = self.total / max(self.count, 1)
        variance = np.maximum(self.total_sq / max(self.count, 1) - mean**2, 0.0)
        return {
            "count": [float(self.count)] * len(mean),
            "mean": mean.tolist(),
            "std": np.sqrt(variance).tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
        }


SUM_PIECE = 2**16
"""Elements summed at a time in a 32-bit accumulator by :func:`_exact_sum`."""


def _exact_sum(values: np.ndarray, partial_type: type[np.integer[Any]]) -> int:
    """The exact integer sum of the 1-D integer ``values``, summed in pieces of :data:`SUM_PIECE` values
    in ``partial_type`` (3x faster than 64-bit sums of 8-bit values: numpy widens fewer bytes), then
    the piece sums in 64 bits. Exact when ``SUM_PIECE`` times the largest ``abs(value)`` fits in
    ``partial_type``: 16-bit values or 8-bit squares in 32 bits; other callers pass a 64-bit type."""
    whole = values.size - values.size % SUM_PIECE
    wide = np.int64 if values.dtype.kind == "i" else np.uint64
    pieces = values[:whole].reshape(-1, SUM_PIECE).sum(axis=1, dtype=partial_type)
    return int(pieces.sum(dtype=wide)) + int(values[whole:].sum(dtype=wide))


_thread_local = threading.local()

OPEN_DATASETS_PER_THREAD = 64
"""Datasets each thread keeps open between chunks; beyond it the least recently used one is closed, so a
worker reading a city of thousands of tiles stays far below the open-file limit (``ulimit -n``)."""


def thread_cached_dataset(key: Hashable, open_dataset: Callable[[], Any]) -> Any:
    """The open dataset of ``key`` for this thread, opened with ``open_dataset()`` when not kept.

    rasterio datasets are not thread-safe, so each thread keeps its own, at most
    :data:`OPEN_DATASETS_PER_THREAD` of them: the least recently used one is closed (a ``WarpedVRT``
    together with the file under it) when another is opened.
    """
    cache: OrderedDict[Hashable, Any] | None = getattr(_thread_local, "datasets", None)
    if cache is None:
        cache = _thread_local.datasets = OrderedDict()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    dataset = cache[key] = open_dataset()
    while len(cache) > OPEN_DATASETS_PER_THREAD:
        _, evicted = cache.popitem(last=False)
        evicted.close()
        source = getattr(evicted, "src_dataset", None)  # a WarpedVRT does not close its file
        if source is not None:
            source.close()
    return dataset


def _open_scene_cached(uri: str, warp_gcps: bool) -> Any:
    """One open rasterio dataset per thread and scene (:func:`thread_cached_dataset`)."""

    def open_dataset() -> Any:
        with storage.gdal_env(uri):
            return open_scene_dataset(uri, warp_gcps=warp_gcps)

    return thread_cached_dataset(("scene", uri, warp_gcps), open_dataset)


@dataclass(frozen=True)
class TileChunkJob:
    """One chunk of the tile stage (small and picklable: sent to a Dask worker)."""

    scene_uri: str
    store_uri: str
    chunk_index: tuple[int, int]
    window: Window
    nodata: float | int | None
    band_indexes: tuple[int, ...] = ()
    warp_gcps: bool = False


def read_tile_window(uri: str, window: Window, *, job: TileChunkJob) -> tuple[np.ndarray, np.ndarray]:
    """``(block, valid)`` of ``window`` of the file ``uri``: ``(bands, rows, cols)`` in the file's pixel type
    and ``(rows, cols)`` bool (:func:`eoseg.scene.validity.read_valid_window`: nodata, alpha, masks, NaN).

    Raises:
        CorruptSceneError: the read fails (truncated or corrupt file), naming the file and the window.
    """
    rows, cols = window.slices
    try:
        with storage.gdal_env(uri):
            return read_valid_window(
                _open_scene_cached(uri, job.warp_gcps),
                window.to_rasterio(),
                indexes=job.band_indexes or None,
                fill=job.nodata,
            )
    except Exception as error:
        raise CorruptSceneError(
            f"{uri}: reading pixels at rows {rows.start}-{rows.stop}, columns {cols.start}-{cols.stop} "
            f"failed ({reason(error)}); the file is truncated or corrupt. Re-download or re-export it."
        ) from error


def write_tile_chunk(job: TileChunkJob, block: np.ndarray, valid: np.ndarray) -> BandMoments:
    """Write one chunk's pixels and validity into the store, flag it done, and return the band moments
    of its valid pixels."""
    row, col = job.chunk_index
    write_chunk(job.store_uri, "image", (0, row, col), block)
    write_chunk(job.store_uri, VALID_VARIABLE, (row, col), valid.view(np.uint8))
    mark_chunk_done(job.store_uri, job.chunk_index)
    return BandMoments.of_block(block, valid)


def tile_chunk(job: TileChunkJob) -> BandMoments:
    """Copy one window of the scene and its validity into their Zarr chunks (see :func:`write_tile_chunk`)."""
    return write_tile_chunk(job, *read_tile_window(job.scene_uri, job.window, job=job))


def recall_tile_chunk(job: TileChunkJob) -> BandMoments:
    """The band moments of a chunk an earlier run already wrote, re-read (pixels and validity)."""
    rows, cols = job.window.slices
    block = np.asarray(open_data_array(job.store_uri, "image")[:, rows, cols])
    valid = np.asarray(open_data_array(job.store_uri, VALID_VARIABLE)[rows, cols]).astype(bool)
    return BandMoments.of_block(block, valid)


def _store_info_for(scene: SceneInfo, chunk_size: int) -> StoreInfo:
    return StoreInfo(
        kind="image",
        geobox=scene.geobox,
        band_count=scene.band_count,
        dtype=scene.dtype,
        chunk_rows=min(chunk_size, scene.height),
        chunk_cols=min(chunk_size, scene.width),
        nodata=scene.nodata,
        band_names=scene.band_names,
        band_descriptions=scene.band_descriptions,
        source_uri=scene.uri,
        acquired=scene.acquired,
        band_metadata=scene.band_metadata,
        alpha_band=scene.alpha_band,
    )


def tile_scene(
    scene_uri: str | Sequence[str],
    store_uri: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = False,
    allow_ungeoreferenced: bool = False,
    warp_gcps: bool = False,
    client: Any = None,
    show_progress: bool | None = None,
    resample: str | None = None,
    sources: SceneSources | None = None,
) -> StoreInfo:
    """Tile ``scene_uri`` into the Zarr store ``store_uri``.

    Args:
        scene_uri: a raster GDAL reads (local path or ``s3://bucket/key``), or a scene of many files: a
            list of GeoTIFFs, a folder, an ``s3://`` prefix or a VRT of tiles
            (:func:`eoseg.scene.sources.open_scene_sources`), written as one store on their union grid.
        store_uri: the Zarr store to create (local path or ``s3://bucket/prefix``).
        chunk_size: chunk edge in pixels (all bands in each chunk); smaller scenes get one chunk.
        overwrite: replace an existing output.
        allow_ungeoreferenced: accept a scene without CRS (the store then has no CRS).
        warp_gcps: warp a GCP-georeferenced scene onto a regular grid (else it is refused).
        resample: warp the files of a many-file scene that lie on another grid onto the first file's grid
            with this GDAL resampling method (else they are refused; :func:`open_scene_sources`).
        client: a ``distributed.Client`` (default: the active one, else local threads).
        show_progress: terminal progress bar on/off (default: when stderr is a terminal).
        sources: ``scene_uri`` already opened with these options (the CLI read its headers to check it);
            None: opened here. On S3 a city's headers are one request per file, so they are read once.

    Returns:
        The finished store's :class:`StoreInfo`, including per-band statistics.

    Raises:
        OutputExistsError: a finished store is at ``store_uri`` and ``overwrite`` is False.
        TileGridMismatchError: the files of a many-file scene are not on one pixel grid.
        EosegError subclasses for bad input, before anything is written or with the partial output removed.
        Other failures (a lost worker, a storage error) keep the partial store: running again resumes it.
    """
    if chunk_size < 16:
        raise ConfigurationError(f"chunk size must be at least 16 pixels, got {chunk_size}")
    from eoseg.tile.multi_file import multi_file_jobs, tile_multi_file_chunk

    sources = sources or open_scene_sources(
        scene_uri, allow_ungeoreferenced=allow_ungeoreferenced, warp_gcps=warp_gcps, resample=resample
    )
    scene = sources.scene
    inputs = [scene_uri] if isinstance(scene_uri, str) else list(scene_uri)
    output = open_store_output(
        store_uri, _store_info_for(scene, chunk_size), overwrite=overwrite, inputs=inputs
    )
    windows = list(output.info.grid.windows())
    jobs: list[TileChunkJob] = [
        TileChunkJob(
            scene.uri, output.staging, index, window, scene.nodata, scene.band_indexes, scene.warp_gcps
        )
        for index, window in windows
    ]
    compute: Callable[[Any], BandMoments] = tile_chunk
    if not sources.single_file:  # one store on the union grid, each chunk read from the tiles it overlaps
        jobs, compute = list(multi_file_jobs(sources, output.staging, windows)), tile_multi_file_chunk
    done = output.chunks_done()

    def finalise(moments: list[BandMoments | None]) -> StoreInfo:
        total = functools.reduce(operator.add, [m for m in moments if m is not None])
        if total.count == 0:
            raise EmptySceneError(
                f"{scene.uri}: every pixel is nodata (value {scene.nodata!r}, mask, alpha or NaN); there is "
                "nothing to segment. Check the scene, or its nodata value (gdal_edit.py -unsetnodata if 0 "
                "is real data)."
            )
        return finish_store_output(output, replace(output.info, band_stats=total.summary()))

    stage = ChunkedStage(
        label="tile",
        jobs=jobs,
        done=[bool(done[index]) for index, _ in windows],
        compute=compute,
        recall=recall_tile_chunk,
        finalise=finalise,
    )
    logger.info(
        "tiling %s (%d file(s), %d x %d px, %d band(s), %s) into %d chunk(s)",
        scene.uri,
        len(sources.tiles),
        scene.width,
        scene.height,
        scene.band_count,
        scene.dtype,
        len(windows),
    )
    with discarded_on_bad_input(output):
        info = run_stage(stage, client=client, show_progress=show_progress)
    logger.info("wrote %s", output.target)
    return info
