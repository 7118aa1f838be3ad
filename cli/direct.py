"""Commands without Prefect: the same stage functions the flows' tasks call, called directly.

A Prefect flow run costs a command ~1.5 s of imports and, when no Prefect server is configured, ~7 s to
start Prefect's temporary server (measured; see benchmarks/results/command_overhead.md), against
~0.2 s of work to tile a small scene. So ``eoseg tile``, ``predict`` and ``mosaic`` call the stages
directly unless Prefect is wanted (:func:`cli.runs.stage_runner`): the outputs, their lifecycle (resume,
overwrite, atomic publish), the Dask cluster and the log lines are the same; only the run history and
Prefect's retries are missing. This module never imports Prefect.
"""

from __future__ import annotations

import logging
from typing import Any

from eoseg.compute.cluster import ClusterSpec, connect, has_gpu_workers, stage_cluster
from eoseg.config import MosaicOptions, PredictOptions, TileOptions
from eoseg.geometry import ChunkGrid

__all__ = ["mosaic_direct", "predict_direct", "tile_direct"]


def log_to_terminal() -> None:
    """Print eoseg's INFO lines on stderr as Prefect's console handler would (it is not set up here)."""
    if not logging.root.handlers:
        logging.basicConfig(
            format="%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", datefmt="%H:%M:%S"
        )


def tile_direct(
    scene_uri: str | list[str], store_uri: str, *, options: TileOptions, cluster: ClusterSpec, overwrite: bool
) -> dict[str, Any]:
    """``eoseg tile`` without Prefect: what ``tile-scene`` does; returns the store's metadata attributes.

    ``scene_uri`` is one file or several on one grid (:func:`eoseg.scene.sources.open_scene_sources`).
    The chunks run on threads of this process unless a cluster is configured or asked for (``--workers``,
    ``--threads-per-worker``, ``--memory-limit`` or their ``EOSEG_*`` variables start a local one).

    Raises:
        EosegError: Bad input (before anything is written), or an existing output without ``overwrite``.
    """
    from cli.runs import local_cluster_requested, scene_sources
    from eoseg.tile.stage import tile_scene

    log_to_terminal()
    sources = scene_sources(scene_uri, options)  # read by the preflight: the stage reads no header again
    scene = sources.scene
    chunks = len(ChunkGrid(scene.height, scene.width, options.chunk_size, options.chunk_size))
    # Tiling is GDAL decoding and Blosc compression, which release the GIL: threads of this process do it
    # without worker processes' start-up (benchmarks/results/tile_mosaic.md), unless a cluster was asked for.
    threads = not local_cluster_requested()
    with stage_cluster(cluster, work_chunks=chunks, threads=threads) as address, connect(address) as client:
        info = tile_scene(
            scene_uri, store_uri, chunk_size=options.chunk_size, overwrite=overwrite,
            allow_ungeoreferenced=options.allow_ungeoreferenced, warp_gcps=options.warp_gcps, client=client,
            resample=options.resample, sources=sources,
        )  # fmt: skip
    return info.to_attrs()


def predict_direct(
    store_uri: str,
    model_uri: str,
    labels_uri: str,
    *,
    options: PredictOptions,
    cluster: ClusterSpec,
    overwrite: bool,
) -> dict[str, Any]:
    """``eoseg predict`` without Prefect; returns the label store's metadata attributes.

    Chunks go to GPU workers when the cluster has any (no Prefect concurrency limit is held: that needs
    a Prefect server). A local cluster is started only when the store has more than one chunk.
    """
    from eoseg.predict.stage import predict_store
    from eoseg.store.layout import read_store_info

    log_to_terminal()
    chunks = len(read_store_info(store_uri).grid)
    with stage_cluster(cluster, work_chunks=chunks) as address, connect(address) as client:
        info = predict_store(
            store_uri, model_uri, labels_uri, halo=options.halo, overwrite=overwrite, client=client,
            use_gpu=has_gpu_workers(client), attention_pooling=options.attention_pooling,
            precision=options.precision, refine=options.refine,
        )  # fmt: skip
    return info.to_attrs()


def mosaic_direct(
    store_uri: str, cog_uri: str, *, options: MosaicOptions, overwrite: bool, cluster: ClusterSpec
) -> dict[str, Any]:
    """``eoseg mosaic`` without Prefect; returns the COG's summary. The pieces of an ``s3://`` COG go to
    the configured cluster when there is one (as ``mosaic-store`` does), else to threads of this process."""
    from dataclasses import asdict

    from eoseg.mosaic.cog import mosaic_to_cog, pieces_for_workers

    log_to_terminal()
    work = pieces_for_workers(store_uri, cog_uri)
    with stage_cluster(cluster, work_chunks=work, threads=True) as address, connect(address) as client:
        summary = mosaic_to_cog(
            store_uri, cog_uri, band=options.band, overwrite=overwrite,
            overview_resampling=options.overview_resampling, max_pixels=options.max_pixels, client=client,
        )  # fmt: skip
    return asdict(summary)
