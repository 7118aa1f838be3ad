"""The flows behind eoseg's deployments (``deployments/prefect.yaml``).

- ``city-run``: segment a list of scenes, or every scene under a prefix, into OUTPUT_PREFIX/NAME.tif;
- ``reprocess-new-acquisitions``: the same, only for scenes without an up-to-date map (scheduled, and
  triggered by ``eoseg.acquisition.created`` events); a run with nothing new does nothing and says so.
  With ``group_by=folder`` each sub-folder of the scenes prefix is one acquisition whose tiles form one
  mosaic (one ``segment-scene`` run, OUTPUT_PREFIX/<folder>.tif); the published model and legend
  (``weights_uri``, ``legend_uri``) are applied to every acquisition, so maps of different dates share
  one legend;
- ``train-model``: train a model on one scene or a set and publish the checkpoint where later runs
  reference it (``weights_uri``).

Each scene is one ``segment-scene`` subflow run followed by a ``catalogue`` task (STAC Item beside the
map, listed in OUTPUT_PREFIX/catalog.json; :mod:`flows.scene_mapping`); all scenes of a run share one
Dask cluster. A markdown artifact summarises every run (:mod:`flows.run_summary`). Credentials never
travel as parameters: they come from the worker's environment (``AWS_*``) or from a Prefect Secret block
whose *name* is a parameter (:mod:`flows.deployment_parameters`).
"""

from __future__ import annotations

import re
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed

from eoseg.catalog.acquisitions import (
    SceneDecision,
    SceneFile,
    SceneStatus,
    join_uri,
    list_scenes,
    map_uri_for,
    plan_reprocessing,
    reference_for,
    scene_stem,
)
from eoseg.catalog.stac import catalog_uri_for_prefix
from eoseg.compute.cluster import ClusterSpec, dask_cluster
from eoseg.config import MosaicOptions, PredictOptions, TileOptions
from eoseg.errors import ConfigurationError
from eoseg.io import storage
from eoseg.train.stores import reusable_tile_store
from flows.deployment_parameters import TRAIN_PER_SCENE, configured, s3_credentials, weights_choice
from flows.logs import configure_logging
from flows.run_summary import finish_run, publish_summary, row_name
from flows.scene_mapping import SceneMapping, map_scenes
from tasks.model_stages import train_task
from tasks.storage_stages import tile_task

if TYPE_CHECKING:  # mypy knows the base of the option model that eoseg.config derives at import time
    from eoseg.train.options import TrainingOptions as ClustererTrainingOptions
else:
    from eoseg.config import ClustererTrainingOptions

__all__ = ["city_run_flow", "reprocess_new_acquisitions_flow", "train_model_flow"]


# tile ... overwrite are segment-scene's parameters, passed on to each scene's subflow run: declared again
# here because a flow's signature is its form in the Prefect UI.
@flow(name="city-run", log_prints=True)
def city_run_flow(
    output_prefix: str,
    scene_uris: list[str] | None = None,
    scenes_prefix: str | None = None,
    recursive: bool = False,
    model: Literal["clusterer", "mcl-lc"] = "clusterer",
    weights_uri: str = TRAIN_PER_SCENE,
    tile: TileOptions = TileOptions(),
    training: ClustererTrainingOptions = ClustererTrainingOptions(),
    predict: PredictOptions = PredictOptions(),
    mosaic: MosaicOptions = MosaicOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
    credentials_secret: str | None = None,
    mosaic_name: str | None = None,
    legend_uri: str | None = None,
) -> State[dict[str, Any]]:
    """Segment scenes end to end into OUTPUT_PREFIX/<scene name>.tif, each with a STAC item in the catalogue.

    With ``mosaic_name`` the scenes are the tiles of one city on one pixel grid, mapped by one mosaic run
    into OUTPUT_PREFIX/<mosaic_name>.tif: one store, one model, no seams, every tile's chunks in one pool.

    Args:
        output_prefix: folder or s3:// prefix for maps, quick-looks, STAC items and catalog.json.
        scene_uris: scenes to segment (GeoTIFF paths or s3:// URIs).
        scenes_prefix: segment every *.tif/*.tiff under this folder or s3:// prefix as well.
        recursive: with scenes_prefix, also look in sub-folders.
        model: model family.
        weights_uri: checkpoint to apply to every scene (e.g. from the train-model deployment), or ``train``
            to train the clusterer on each scene (MAP.model.pt beside its map). Empty is refused.
        tile: tiling options.
        training: clusterer training options (used when weights_uri is empty).
        predict: inference options.
        mosaic: COG options.
        cluster: Dask cluster shared by all scenes of the run.
        overwrite: replace existing maps (refused, before any work, when false and a map exists).
        credentials_secret: name of a Prefect Secret block holding S3 credentials (JSON); empty: the worker's
            AWS_* environment. Never put a credential itself in a parameter.
        mosaic_name: map all scenes as the tiles of one mosaic, OUTPUT_PREFIX/<mosaic_name>.tif (with
            ``train``, one model is trained for the whole mosaic); empty: one map per scene.
        legend_uri: legend YAML (cluster names, colours, merges; ``eoseg legend``) applied to every map;
            empty: cluster numbers only.
    """
    configure_logging()
    logger = get_run_logger()
    output_prefix = configured(output_prefix, "output_prefix", required=True)
    legend = configured(legend_uri, "legend_uri")
    mapping = SceneMapping(model, weights_choice(weights_uri), tile, training, predict, mosaic, legend)
    prefix = configured(scenes_prefix, "scenes_prefix")
    with s3_credentials(configured(credentials_secret, "credentials_secret")):
        mapping.check_legend()
        scenes = [
            SceneFile(uri=storage.normalise_uri(uri), modified=0.0, size=0, reference_uri=reference_for(uri))
            for uri in (scene_uris or [])
        ]
        if prefix:
            scenes += list_scenes(prefix, recursive=recursive, exclude_prefix=output_prefix)
        if not scenes:
            raise ConfigurationError(
                "no scene to segment: give scene_uris or a scenes_prefix that holds *.tif files"
            )
        stems = [scene.stem for scene in scenes]
        duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
        if duplicates and not mosaic_name:
            raise ConfigurationError(f"several scenes would write the same map: {duplicates}")
        mosaic_map = join_uri(output_prefix, f"{mosaic_name}.tif") if mosaic_name else None
        logger.info("city run: %d scene(s) -> %s", len(scenes), mosaic_map or output_prefix)
        decisions = [
            SceneDecision(
                scene, SceneStatus.NEW, mosaic_map or map_uri_for(scene.uri, output_prefix), "requested"
            )
            for scene in scenes
        ]
        map_uris = list(dict.fromkeys(d.map_uri for d in decisions))  # a mosaic: one map for all tiles
        existing = [uri for uri in map_uris if storage.exists(uri)]
        if existing and not overwrite:
            raise ConfigurationError(
                f"{len(existing)} of {len(map_uris)} map(s) already exist under {output_prefix} "
                f"({', '.join(PurePosixPath(uri).name for uri in existing[:5])}"
                f"{', ...' if len(existing) > 5 else ''}): run again with `-p overwrite=true` to replace "
                "them, or pass another output_prefix"
            )
        started = time.perf_counter()
        rows = map_scenes(
            decisions, mapping, output_prefix=output_prefix, cluster=cluster, force_overwrite=overwrite,
            mosaic_map_uri=mosaic_map,
        )  # fmt: skip
    done = [row for row in rows if row["status"] != "failed"]
    title = (
        f"city-run: {len(done)} of {len(rows)} scene(s) mapped, "
        f"{sum(row.get('pixels', 0) for row in done):,} px in {time.perf_counter() - started:.0f} s"
    )
    lines = [
        f"Output prefix: `{output_prefix}`; catalogue: `{catalog_uri_for_prefix(output_prefix)}`",
        mapping.describe(),
    ]
    return finish_run(
        "city-run",
        title,
        lines,
        rows,
        output_prefix,
        {"output_prefix": output_prefix, "catalog": catalog_uri_for_prefix(output_prefix), "scenes": rows},
    )


@flow(name="reprocess-new-acquisitions", log_prints=True)
def reprocess_new_acquisitions_flow(
    scenes_prefix: str,
    output_prefix: str,
    weights_uri: str,
    recursive: bool = False,
    model: Literal["clusterer", "mcl-lc"] = "clusterer",
    tile: TileOptions = TileOptions(),
    training: ClustererTrainingOptions = ClustererTrainingOptions(),
    predict: PredictOptions = PredictOptions(),
    mosaic: MosaicOptions = MosaicOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    credentials_secret: str | None = None,
    group_by: Literal["file", "folder"] = "file",
    legend_uri: str | None = None,
) -> State[dict[str, Any]]:
    """Map only the scenes under a prefix that have no up-to-date map; a run with nothing new does nothing.

    A scene is redone when it has no COG (new, or an interrupted run), a COG older than the scene, or a COG
    without its STAC item (the item is written last). Idempotent: run it as often as you like.

    With ``group_by="folder"`` each sub-folder SCENES/ACQ/ is one acquisition: all its tiles (one grid)
    are mapped by one ``segment-scene`` run into OUTPUT/ACQ.tif; it is redone when a tile is newer than
    the map (eoseg.catalog.acquisitions.list_acquisitions).

    Args:
        scenes_prefix: folder or s3:// prefix where new scenes (*.tif, *.tiff) arrive.
        output_prefix: folder or s3:// prefix for maps, STAC items and catalog.json (not the scenes prefix).
        weights_uri: checkpoint applied to every new scene (e.g. published by train-model), or ``train`` to
            train the clusterer on each scene. Empty is refused.
        recursive: also look in sub-folders of scenes_prefix.
        model: model family.
        tile: tiling options.
        training: clusterer training options (used when weights_uri is empty).
        predict: inference options.
        mosaic: COG options.
        cluster: Dask cluster shared by all scenes of the run (started only when there is work).
        credentials_secret: name of a Prefect Secret block holding S3 credentials (JSON); empty: the worker's
            AWS_* environment.
        group_by: ``file``: each scene file is one map; ``folder``: each sub-folder of scenes_prefix is one
            acquisition, its tiles one mosaic (files directly under scenes_prefix stay single scenes).
        legend_uri: the area's legend YAML, applied to every map (so maps of different dates share
            names and colours); empty: cluster numbers only.
    """
    configure_logging()
    logger = get_run_logger()
    scenes_prefix = configured(scenes_prefix, "scenes_prefix", required=True)
    output_prefix = configured(output_prefix, "output_prefix", required=True)
    legend = configured(legend_uri, "legend_uri")
    mapping = SceneMapping(model, weights_choice(weights_uri), tile, training, predict, mosaic, legend)
    with s3_credentials(configured(credentials_secret, "credentials_secret")):
        plan = plan_reprocessing(scenes_prefix, output_prefix, recursive=recursive, group_by=group_by)
        todo = [decision for decision in plan if decision.needs_processing]
        for decision in plan:
            logger.info("%s: %s (%s)", _plan_name(decision), decision.status.value, decision.reason)
        lines = [
            f"Scenes prefix: `{scenes_prefix}`; output prefix: `{output_prefix}`; catalogue: "
            f"`{catalog_uri_for_prefix(output_prefix)}`",
            mapping.describe(),
        ]
        up_to_date = [d.scene.uri for d in plan if not d.needs_processing]
        if not todo:
            title = (
                f"reprocess-new-acquisitions: nothing new: all {len(plan)} scene(s) under {scenes_prefix} "
                f"have up-to-date maps"
            )
            logger.info(title)
            return finish_run(
                "reprocess",
                title,
                lines,
                [],
                output_prefix,
                {"processed": [], "up_to_date": up_to_date, "message": title},
            )
        logger.info(
            "%d of %d scene(s) need a map: %s",
            len(todo),
            len(plan),
            ", ".join(f"{_plan_name(d)} ({d.status.value})" for d in todo),
        )
        mapping.check_legend()
        started = time.perf_counter()
        rows = map_scenes(todo, mapping, output_prefix=output_prefix, cluster=cluster)
    done = [row for row in rows if row["status"] != "failed"]
    title = (
        f"reprocess-new-acquisitions: {len(done)} scene(s) mapped "
        f"({', '.join(row_name(row) for row in done) or 'none'}), "
        f"{len(up_to_date)} already up to date; {sum(row.get('pixels', 0) for row in done):,} px in "
        f"{time.perf_counter() - started:.0f} s"
    )
    logger.info(title)
    return finish_run(
        "reprocess",
        title,
        lines,
        rows,
        output_prefix,
        {
            "processed": [row["scene"] for row in done],
            "up_to_date": up_to_date,
            "scenes": rows,
            "message": title,
        },
    )


def _plan_name(decision: SceneDecision) -> str:
    """A scene's file name, or an acquisition's folder name and tile count."""
    scene = decision.scene
    return f"{scene.acquisition}/ ({len(scene.tiles)} tiles)" if scene.tiles else scene.name


@flow(name="train-model", log_prints=True)
def train_model_flow(
    model_uri: str,
    scene_uris: list[str] | None = None,
    scenes_prefix: str | None = None,
    model: Literal["clusterer"] = "clusterer",
    work_prefix: str | None = None,
    tile: TileOptions = TileOptions(),
    training: ClustererTrainingOptions = ClustererTrainingOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
    credentials_secret: str | None = None,
) -> State[dict[str, Any]]:
    """Train a model on one scene or a set, and publish the checkpoint at model_uri for later runs.

    Later runs reference the checkpoint with ``weights_uri=<model_uri>`` (city-run and
    reprocess-new-acquisitions). mCL-LC is pre-trained and fine-tuned by its own flows (train-mcl-lc).

    Args:
        model_uri: where to publish the checkpoint (path or s3:// URI, e.g. s3://bucket/models/naip-v1.pt).
        scene_uris: training scenes.
        scenes_prefix: train on every *.tif/*.tiff under this folder or s3:// prefix as well.
        model: model family.
        work_prefix: where the scenes' tile stores go (kept, and reused by a later run); empty: a folder
            MODEL.work beside the checkpoint.
        tile: tiling options.
        training: training options (the paper's defaults; shrink them for CPU runs).
        cluster: Dask cluster for tiling (training runs on a GPU worker when the cluster has one).
        overwrite: replace an existing checkpoint.
        credentials_secret: name of a Prefect Secret block holding S3 credentials; empty: the environment.
    """
    configure_logging()
    logger = get_run_logger()
    model_uri = storage.normalise_uri(configured(model_uri, "model_uri", required=True))
    prefix = configured(scenes_prefix, "scenes_prefix")
    work = configured(work_prefix, "work_prefix") or (re.sub(r"\.pt$", "", model_uri) + ".work")
    with s3_credentials(configured(credentials_secret, "credentials_secret")):
        scenes = [storage.normalise_uri(uri) for uri in (scene_uris or [])]
        if prefix:
            scenes += [scene.uri for scene in list_scenes(prefix)]
        if not scenes:
            raise ConfigurationError(
                "no scene to train on: give scene_uris or a scenes_prefix with *.tif files"
            )
        if storage.exists(model_uri) and not overwrite:
            raise ConfigurationError(
                f"{model_uri}: a checkpoint is already published there; run again with `-p overwrite=true` "
                "to replace it, or publish under a new name (e.g. a version suffix)"
            )
        started = time.perf_counter()
        stores = []
        with dask_cluster(cluster) as address:
            for scene in scenes:
                store = join_uri(work, f"{scene_stem(scene)}.tiles.zarr")
                if reusable_tile_store(store, scene):
                    logger.info("reusing the tile store %s", store)
                else:
                    tile_task(scene, store, options=tile, overwrite=True, scheduler_address=address)
                stores.append(store)
            summary = train_task(
                model, stores, model_uri, options=training, overwrite=overwrite, scheduler_address=address
            )
    seconds = time.perf_counter() - started
    title = (
        f"train-model: {model} trained on {len(scenes)} scene(s), {summary['patches']} patches, "
        f"published at {model_uri}"
    )
    lines = [
        f"Checkpoint: `{model_uri}` (use it as `weights_uri`)",
        f"Training: {summary['seconds']:.1f} s on {summary['device']}, final loss "
        f"{summary['final_loss'] if summary['final_loss'] is None else round(summary['final_loss'], 4)}; "
        f"whole run {seconds:.0f} s",
        "",
        "Scenes:",
        *[f"- `{scene}`" for scene in scenes],
    ]
    publish_summary(
        "\n".join([f"# {title}", "", *lines]) + "\n", kind="model", key_prefix=model_uri, title=title
    )
    logger.info(title)
    return Completed(
        message=title, data={"model_uri": model_uri, "scenes": scenes, "stores": stores, "training": summary}
    )
