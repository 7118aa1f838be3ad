"""The end-to-end segmentation flow (tile -> train -> predict -> mosaic), and the predict stage alone.

Training flows per model family are in :mod:`flows.train_flows`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger

from eo_models.family import family_names, get_family
from eoseg.compute.cluster import ClusterSpec, dask_cluster
from eoseg.config import MosaicOptions, PredictOptions, TileOptions
from eoseg.errors import ConfigurationError
from eoseg.outputs import RunOutputs
from eoseg.predict.stage import check_model_bands
from eoseg.store.lifecycle import check_file_output
from eoseg.train.patches import check_patch_fits
from flows.storage_flows import inspect_scene_logged
from tasks.model_stages import evaluate_task, predict_task, quicklook_task, train_task
from tasks.storage_stages import mosaic_task, tile_task

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
    scene_uri: str,
    map_uri: str,
    model: FamilyName = "clusterer",
    weights_uri: str | None = None,
    reference_uri: str | None = None,
    tile: TileOptions = TileOptions(),
    training: ClustererTrainingOptions = ClustererTrainingOptions(),
    predict: PredictOptions = PredictOptions(),
    mosaic: MosaicOptions = MosaicOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Segment one scene end to end: tile -> train (unless weights are given) -> predict -> mosaic.

    Outputs sit beside the map: MAP.tiles.zarr, MAP.model.pt (when trained here), MAP.labels.zarr,
    MAP.png (quick-look) and MAP.scores.json (when a reference is given).
    """
    logger = get_run_logger()
    outputs = RunOutputs.for_map(map_uri)
    family = get_family(model)
    if weights_uri is None and family.finetune is not None:
        raise ConfigurationError(
            f"{model} needs pre-trained, fine-tuned weights: run `eoseg train {model}` and "
            "`eoseg finetune`, then pass --weights"
        )
    if weights_uri is None and training.params_class is not family.training_params:
        raise ConfigurationError(f"the training options given are not those of the {model} model family")
    check_file_output(outputs.cog, overwrite=overwrite)  # before hours of work, not after
    scene = inspect_scene_logged(scene_uri, tile)
    if weights_uri is None:  # training needs one patch: refuse before tiling, not after
        check_patch_fits(
            scene["uri"], scene["height"], scene["width"], training.training_params()["patch_size"]
        )
    else:  # and a model trained on other bands: refuse before tiling
        check_model_bands(scene["uri"], scene["band_count"], weights_uri)
    with dask_cluster(cluster) as address:
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
    # A label store has one band: the mosaic options' band (for image stores) does not apply.
    label_mosaic = mosaic.model_copy(update={"band": None})
    mosaic_task(outputs.labels, outputs.cog, options=label_mosaic, overwrite=overwrite)
    quicklook_task(scene_uri, outputs.cog, outputs.quicklook, title=f"{scene_uri} -> {outputs.cog}")
    scores = None
    if reference_uri:
        scores = evaluate_task(outputs.cog, reference_uri, outputs.scores)
    logger.info("map: %s; quick-look: %s; model: %s", outputs.cog, outputs.quicklook, model_uri)
    return {
        "scene": scene_uri,
        "map": outputs.cog,
        "quicklook": outputs.quicklook,
        "model": model_uri,
        "tiles": outputs.tiles,
        "labels": outputs.labels,
        "scores": scores,
        "scores_file": outputs.scores if scores else None,
        "training": training_summary,
    }
