"""The end-to-end segmentation flow (tile -> train -> predict -> mosaic), and the predict stage alone.

Training flows per model family are in :mod:`flows.train_flows`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger

from eo_models.family import family_names
from eoseg.compute.cluster import ClusterSpec, dask_cluster, stage_cluster
from eoseg.config import EvaluateOptions, MosaicOptions, PredictOptions, TileOptions, check_run_model
from eoseg.geometry import ChunkGrid
from eoseg.mosaic.cog import check_single_cog_size
from eoseg.mosaic.legend import read_legend
from eoseg.outputs import RunOutputs
from eoseg.predict.stage import check_model_bands
from eoseg.store.lifecycle import check_file_output
from eoseg.train.patches import check_patch_fits
from flows.storage_flows import inspect_scene_logged
from tasks.model_stages import baseline_task, evaluate_task, predict_task, quicklook_task, train_task
from tasks.run_names import scene_label
from tasks.storage_stages import legend_task, mosaic_task, per_tile_maps_task, tile_task

# mypy sees the static types; Prefect, which builds each flow's parameter form from the annotations, sees
# the values derived from the model-family registry at import time.
if TYPE_CHECKING:
    from eoseg.train.options import TrainingOptions as ClustererTrainingOptions

    FamilyName = str
else:
    from eoseg.config import ClustererTrainingOptions

    # The registered model families, as a choice in the Prefect UI.
    FamilyName = Literal[tuple(family_names())]


@flow(name="predict", log_prints=True)
def predict_flow(
    store_uri: str,
    model_uri: str,
    labels_uri: str,
    options: PredictOptions = PredictOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tiled, haloed inference of a checkpoint over a tile store into a label store, on Dask."""
    with dask_cluster(cluster) as address:
        return predict_task(
            store_uri, model_uri, labels_uri, options=options, overwrite=overwrite, scheduler_address=address
        )


@flow(name="segment-scene", log_prints=True)
def segment_scene_flow(
    scene_uri: str | list[str],
    map_uri: str,
    model: FamilyName = "clusterer",
    weights_uri: str | None = None,
    reference_uri: str | None = None,
    tile: TileOptions = TileOptions(),
    training: ClustererTrainingOptions = ClustererTrainingOptions(),
    predict: PredictOptions = PredictOptions(),
    mosaic: MosaicOptions = MosaicOptions(),
    evaluate: EvaluateOptions = EvaluateOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
    per_tile_maps: str | None = None,
    legend_uri: str | None = None,
) -> dict[str, Any]:
    """Segment one scene end to end: tile -> train (unless weights are given) -> predict -> mosaic.

    The scene may be many files on one grid (a list, a folder, an s3:// prefix or a VRT of tiles): they
    form one store, so one model, one scene-wide context and haloes across tile borders cover them all.

    Outputs sit beside the map: MAP.tiles.zarr, MAP.model.pt (when trained here), MAP.labels.zarr,
    MAP.png (quick-look) and MAP.scores.json (when a reference is given); with ``evaluate.baseline``
    also MAP.kmeans.tif and MAP.kmeans.scores.json (the raw-pixel k-means baseline, scored the same way).
    With ``per_tile_maps`` (a
    folder or s3:// prefix): one COG per input tile on its exact grid, a VRT over them, a quick-look and
    a STAC Collection there too; an area of more than ``mosaic.max_pixels`` then gets only those (the
    VRT is the run's map), and without ``per_tile_maps`` it is refused before any work. ``legend_uri``:
    a legend YAML (cluster names, colours, merges; eoseg.mosaic.legend) applied to every map written.
    """
    logger = get_run_logger()
    outputs = RunOutputs.for_map(map_uri)
    check_run_model(model, weights_uri=weights_uri, training=training)
    check_file_output(outputs.cog, overwrite=overwrite)  # before hours of work, not after
    if legend_uri:
        read_legend(legend_uri)  # a bad legend is refused before any work
    scene = inspect_scene_logged(scene_uri, tile)
    single_cog = scene["height"] * scene["width"] <= mosaic.max_pixels
    if not single_cog and per_tile_maps is None:
        check_single_cog_size(scene["height"] * scene["width"], limit=mosaic.max_pixels, what=outputs.cog)
    if weights_uri is None:  # training needs one patch: refuse before tiling, not after
        check_patch_fits(
            scene["uri"], scene["height"], scene["width"], training.training_params()["patch_size"]
        )
    else:  # and a model trained on other bands: refuse before tiling
        check_model_bands(scene["uri"], scene["band_count"], weights_uri)
    chunks = len(ChunkGrid(scene["height"], scene["width"], tile.chunk_size, tile.chunk_size))
    with stage_cluster(cluster, work_chunks=chunks) as address:  # one chunk: no cluster to start
        tile_task(scene_uri, outputs.tiles, options=tile, overwrite=overwrite, scheduler_address=address)
        training_summary = None
        model_uri = weights_uri
        if model_uri is None:
            training_summary = train_task(
                model,
                [outputs.tiles],
                outputs.model,
                options=training,
                overwrite=overwrite,
                scheduler_address=address,
            )
            model_uri = outputs.model
            logger.info("trained model kept at %s", outputs.model)
        predict_task(
            outputs.tiles,
            model_uri,
            outputs.labels,
            options=predict,
            overwrite=overwrite,
            scheduler_address=address,
        )
        if single_cog:  # an s3:// COG's pieces are written by the cluster's workers (a local one's here)
            # A label store has one band: the mosaic options' band (for image stores) does not apply.
            label_mosaic = mosaic.model_copy(update={"band": None})
            mosaic_task(
                outputs.labels,
                outputs.cog,
                options=label_mosaic,
                overwrite=overwrite,
                scheduler_address=address,
            )
    tile_maps, the_map, quicklook = None, outputs.cog, outputs.quicklook
    if per_tile_maps:
        name = scene_label(outputs.cog)
        tile_maps = per_tile_maps_task(
            outputs.labels, scene_uri, per_tile_maps, name=name, model_uri=model_uri, legend_uri=legend_uri,
            overwrite=overwrite,
        )  # fmt: skip
        if not single_cog:
            the_map, quicklook = tile_maps["vrt"], tile_maps["quicklook"]
    if single_cog and legend_uri:
        legend_task(outputs.cog, legend_uri)
    scores = baseline_scores = None
    if reference_uri:
        ignore, names = tuple(evaluate.ignore), evaluate.class_names
        scores = evaluate_task(
            the_map, reference_uri, outputs.scores, ignore_values=ignore, class_names=names
        )
        if evaluate.baseline is not None and isinstance(scene_uri, str):  # one raster: the baseline's input
            baseline_task(scene_uri, model_uri, outputs.baseline, seed=evaluate.seed)
            baseline_scores = evaluate_task(
                outputs.baseline,
                reference_uri,
                outputs.baseline_scores,
                ignore_values=ignore,
                class_names=names,
            )
    if single_cog:
        scene_name = scene_uri if isinstance(scene_uri, str) else scene_label(scene_uri)
        quicklook_task(
            scene_uri, outputs.cog, outputs.quicklook, title=f"{scene_name} -> {outputs.cog}",
            class_names=None if legend_uri else _mapped_class_names(scores),
        )  # fmt: skip
    logger.info("map: %s; quick-look: %s; model: %s", the_map, quicklook, model_uri)
    return {
        "scene": scene_uri,
        "map": the_map,
        "per_tile_maps": tile_maps,
        "quicklook": quicklook,
        "model": model_uri,
        "tiles": outputs.tiles,
        "labels": outputs.labels,
        "scores": scores,
        "scores_file": outputs.scores if scores else None,
        "baseline": outputs.baseline if baseline_scores else None,
        "baseline_scores": baseline_scores,
        "training": training_summary,
    }


def _mapped_class_names(scores: dict[str, dict[str, Any]] | None) -> dict[int, str] | None:
    """The quick-look key's names: each cluster's class under the majority mapping (when scored)."""
    if not scores:
        return None
    report = scores["majority"]
    names = {int(value): row.get("name") or f"class {value}" for value, row in report["per_class"].items()}
    return {int(cluster): names[int(target)] for cluster, target in report["mapping"].items()}
