"""Predict stage: tiled inference over a tile store, chunk by chunk on Dask, into a label store.

Each Dask task reads one output chunk's window grown by a halo, predicts labels for the grown window,
and keeps only the centre ("overlap-tile" blending: every kept pixel was predicted with at least
``halo`` pixels of real context on each side that the scene has, so chunk edges are not where the network
sees zero padding). Weights are loaded once per worker process and reused for every chunk it runs.

Global pooling (the clusterer's channel attention) would make each tile's output depend on that tile
as a whole. With ``attention_pooling="scene"`` (the default for models that support it) a first pass
reduces the pooled descriptors over the whole scene, chunk by chunk, and the second pass predicts every
chunk with them: tiled inference then equals whole-scene inference and no chunk can differ from its
neighbour in how it weights the channels. ``"tile"`` skips the first pass (faster, per-tile pooling).
Invalid input pixels (``valid == 0`` in the image store) become nodata (255) labels, and only they.
The label store has the input's grid and georeferencing.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from eoseg.compute.chunks import current_worker_address, map_chunks
from eoseg.compute.stage import ChunkedStage, run_stage
from eoseg.errors import BandCountError
from eoseg.geometry import Window
from eoseg.io import storage
from eoseg.mosaic.colors import NODATA_LABEL
from eoseg.predict.predictors import (
    cached_predictor,
    checkpoint_fingerprint,
    forward_lock,
    keep_features,
    model_load_counts,
    take_features,
)
from eoseg.predict.refine import RefineOptions, refine_labels, refinement_region
from eoseg.store.layout import StoreInfo, open_data_array, read_image_window, read_store_info
from eoseg.store.lifecycle import (
    discarded_on_bad_input,
    finish_store_output,
    mark_chunk_done,
    open_store_output,
)

if TYPE_CHECKING:
    from distributed import Client

    from eo_models.predict import Predictor

__all__ = ["PredictChunkJob", "cached_predictor", "model_load_counts", "predict_chunk", "predict_store"]

logger = logging.getLogger("eoseg.predict.stage")


@dataclass(frozen=True)
class PredictChunkJob:
    """One output chunk of the predict stage (small and picklable).

    ``info`` is the image store's metadata, read once per run by :func:`predict_store` (no worker
    re-reads it per chunk).
    """

    store_uri: str
    info: StoreInfo
    labels_uri: str
    model_uri: str
    chunk_index: tuple[int, int]
    window: Window
    halo: int
    device: str | None
    model_fingerprint: str | None = None
    context: Any = None
    precision: str = "fp32"
    run_id: str = ""
    refine: RefineOptions | None = None


def _grown(job: PredictChunkJob) -> Window:
    """The job's window grown by its halo, clipped to the scene."""
    return job.window.grown(job.halo, height_limit=job.info.height, width_limit=job.info.width)


def _read_with_halo(job: PredictChunkJob) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """The job's grown window's pixels, its valid mask, and the job's window within it."""
    grown = _grown(job)
    block, valid = read_image_window(job.store_uri, job.info, *grown.slices)
    return block, valid, job.window.relative_to(grown).slices


def _predictor(job: PredictChunkJob) -> Predictor:
    return cached_predictor(
        job.model_uri, job.device, fingerprint=job.model_fingerprint, precision=job.precision
    )


def _native_precision(precision: str) -> str:
    """``precision`` resolved for the device of this process (CUDA when present, else the CPU)."""
    from eo_models.precision import resolve_precision
    from eo_models.predict import resolve_device

    return resolve_precision(precision, resolve_device(None))


def resolve_stage_precision(precision: str, client: Client | None, resources: dict[str, float] | None) -> str:
    """The one precision every chunk of a run uses: ``"auto"`` is resolved where the chunks run.

    With a client, on one worker of the kind the chunks go to (a GPU worker when ``resources`` asks
    for one), else in this process; recorded in the label store's ``model`` attributes.

    Raises:
        ConfigurationError: ``precision`` is not ``"auto"``, ``"fp32"`` or ``"bf16"``.
    """
    from eo_models.precision import PRECISION_CHOICES

    if precision not in PRECISION_CHOICES:
        from eoseg.errors import ConfigurationError

        raise ConfigurationError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    if client is None:
        return _native_precision(precision)
    resolved: str = client.submit(_native_precision, precision, resources=resources, pure=False).result()
    return resolved


def context_partial_chunk(job: PredictChunkJob) -> Any:
    """First pass of the family's scene-wide context: the chunk's partial (the clusterer: sum, count, max).

    The chunk's features are kept in this process for its second pass (within the cache's budget).
    """
    block, valid, inner = _read_with_halo(job)
    predictor = _predictor(job)
    with forward_lock:
        partial, features = predictor.context_pass(block, valid, inner)
    if valid.any():
        keep_features(job.run_id, job.chunk_index, features, valid)
    return partial


def predict_chunk(job: PredictChunkJob) -> dict[str, Any]:
    """Predict one chunk with its halo, write the centre to the label store; returns class counts.

    With ``job.refine``, the labels of the chunk's :func:`~eoseg.predict.refine.refinement_region`
    are predicted and refined by superpixel majority vote (the same labels for any chunking).
    """
    kept = take_features(job.run_id, job.chunk_index) if job.context is not None else None
    predictor = _predictor(job)
    region = job.window
    if job.refine is not None:  # labels of a larger region than the first pass kept features of
        kept = None
        region = refinement_region(job.window, job.refine, height=job.info.height, width=job.info.width)
    if kept is not None:  # the first pass ran this chunk here: start from its features
        features, valid = kept
        inner = job.window.relative_to(_grown(job)).slices
        with forward_lock:
            labels = predictor.predict_features(features, job.context)
    else:
        block, valid, inner = _read_with_halo(replace(job, window=region))
        labels = np.full(block.shape[1:], NODATA_LABEL, dtype=np.uint8)
        if valid.any():
            with forward_lock:
                labels = predictor.predict(block, valid, context=job.context)
    labels[~valid] = NODATA_LABEL
    rows, cols = inner
    centre = labels[rows, cols]
    if job.refine is not None:
        stats = job.info.band_stats or {}
        centre = refine_labels(
            block[:, rows, cols], centre, valid[rows, cols], region=region, window=job.window,
            options=job.refine, height=job.info.height, width=job.info.width,
            band_mean=np.asarray(stats["mean"]) if "mean" in stats else None,
            band_std=np.asarray(stats["std"]) if "std" in stats else None,
        )  # fmt: skip
    open_data_array(job.labels_uri, "labels", mode="r+")[job.window.slices] = centre
    mark_chunk_done(job.labels_uri, job.chunk_index)
    values, counts = np.unique(centre, return_counts=True)
    return {
        "pid": os.getpid(),
        "worker": current_worker_address(),
        **{str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
    }


def check_model_bands(uri: str, band_count: int, model_uri: str, checkpoint: Any = None) -> None:
    """Refuse a model trained on another number of bands than the scene (or store) at ``uri`` has.

    Args:
        uri: the scene or store (named in the message); ``band_count``: its model bands.
        model_uri: the checkpoint; ``checkpoint``: it, loaded (default: loaded here).

    Raises:
        BandCountError: the counts differ.
    """
    from eoseg.train.checkpoints import load_checkpoint_from

    checkpoint = load_checkpoint_from(model_uri) if checkpoint is None else checkpoint
    bands = len(checkpoint["band_mean"])
    if bands != band_count:
        raise BandCountError(
            f"{uri}: the scene has {band_count} band(s) but the model {model_uri} was trained on "
            f"{bands}; use a model trained on this kind of imagery (or train one on this scene)."
        )


def predict_store(
    store_uri: str,
    model_uri: str,
    labels_uri: str,
    *,
    halo: int | None = None,
    overwrite: bool = False,
    client: Client | None = None,
    use_gpu: bool = False,
    attention_pooling: str = "scene",
    precision: str = "auto",
    refine: RefineOptions | None = None,
    show_progress: bool | None = None,
) -> StoreInfo:
    """Run tiled inference of the checkpoint at ``model_uri`` over ``store_uri`` into ``labels_uri``.

    Args:
        store_uri: a finished image store.
        model_uri: a checkpoint (any model family).
        labels_uri: the label store to create (resumed if an interrupted one matches).
        halo: context pixels around each chunk; default: the model family's halo.
        overwrite: replace an existing label store.
        client: a ``distributed.Client`` (default: the active one, else local threads).
        use_gpu: schedule chunks only on workers advertising ``GPU=1`` (which predict on CUDA when present).
        attention_pooling: ``"scene"`` (two passes: the family's scene-wide context pass first, so tiled
            == whole-scene inference) or ``"tile"`` (one pass); families without a context pass ignore it.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:mod:`eo_models.precision`); resolved once for
            the run and recorded in the label store's ``model`` attributes (and so in the COG's tags).
        refine: superpixel refinement of the labels (:mod:`eoseg.predict.refine`); recorded likewise.
        show_progress: terminal progress bar on/off.
    """
    from eo_models.family import get_family
    from eoseg.train.checkpoints import load_checkpoint_from

    store_uri = storage.normalise_uri(store_uri)
    model_uri = storage.normalise_uri(model_uri)
    labels_uri = storage.normalise_uri(labels_uri)
    info = read_store_info(store_uri)
    checkpoint = load_checkpoint_from(model_uri)
    fingerprint = checkpoint_fingerprint(model_uri)
    check_model_bands(store_uri, info.band_count, model_uri, checkpoint)
    model_family = get_family(checkpoint["family"])
    family = model_family.name
    halo = model_family.halo_for(checkpoint) if halo is None else halo
    if attention_pooling not in ("scene", "tile"):
        from eoseg.errors import ConfigurationError

        raise ConfigurationError(f"attention pooling must be 'scene' or 'tile', got {attention_pooling!r}")
    scene_context = model_family.scene_context if attention_pooling == "scene" else None
    resources: dict[str, float] | None = {"GPU": 1} if use_gpu else None
    if client is None:
        from eoseg.compute.chunks import active_client

        client = active_client()
    precision = resolve_stage_precision(precision, client, resources)
    scene_pooling = scene_context is not None
    num_classes = int(checkpoint["num_classes"])
    wanted = replace(
        info,
        kind="labels",
        band_count=1,
        dtype="uint8",
        nodata=NODATA_LABEL,
        band_names=("class",),
        band_descriptions=("class label",),
        band_stats=None,
        band_metadata=None,
        alpha_band=None,
        num_classes=num_classes,
        model={
            "family": family,
            "checkpoint": model_uri,
            "halo": halo,
            "blending": "overlap-tile centre crop",
            "attention_pooling": "scene" if scene_pooling else "tile",
            "precision": precision,
            **({"refine": refine.model_dump()} if refine is not None and refine.enabled else {}),
        },
        source_uri=info.source_uri,
        complete=False,
    )
    output = open_store_output(labels_uri, wanted, overwrite=overwrite, inputs=[store_uri, model_uri])
    staging, labels_info = output.staging, output.info
    done = output.chunks_done()
    device = None  # "auto": CUDA where the worker has it; GPU workers are chosen by the resource below
    windows = list(info.grid.windows())
    refine = refine if refine is not None and refine.enabled else None
    run_id = uuid.uuid4().hex  # names this run's first-pass features kept for its second pass
    with discarded_on_bad_input(output):
        context = None
        if scene_context is not None and not done.all():
            partials = map_chunks(
                context_partial_chunk,
                [PredictChunkJob(store_uri, info, staging, model_uri, i, w, halo, device, fingerprint,
                                 precision=precision, run_id=run_id) for i, w in windows],
                label="pool", client=client, resources=resources, show_bar=show_progress,
            )  # fmt: skip
            context = scene_context.combine(partials)
        logger.info(
            "predicting %d of %d chunks with %s (%s, K=%d, halo %d px, %s)%s",
            int((~done).sum()),
            len(info.grid),
            model_uri,
            family,
            num_classes,
            halo,
            precision,
            " on GPU workers" if use_gpu else "",
        )
        stage = ChunkedStage(
            label="predict",
            jobs=[
                PredictChunkJob(
                    store_uri,
                    info,
                    staging,
                    model_uri,
                    index,
                    window,
                    halo,
                    device,
                    fingerprint,
                    context,
                    precision,
                    run_id,
                    refine,
                )
                for index, window in windows
            ],
            done=[bool(done[index]) for index, _ in windows],
            compute=predict_chunk,
            finalise=lambda results: (
                finish_store_output(output, labels_info),
                [r for r in results if r is not None],
            ),
            resources=resources,
        )
        labels_info, results = run_stage(stage, client=client, show_progress=show_progress)
    workers = sorted({r["worker"] for r in results})
    logger.info("wrote %s (%d chunk(s) predicted on %d worker(s))", labels_uri, len(results), len(workers))
    return labels_info
