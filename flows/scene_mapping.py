"""The per-scene step of the deployment flows: a ``segment-scene`` subflow run, then the scene's STAC item.

All scenes of a run share one Dask cluster; a scene that fails is reported in its row, not raised, so
that the others are still mapped. A scene of many tiles (``SceneFile.tiles``: an acquisition folder, or
city-run's ``mosaic_name``) is one ``segment-scene`` run over all its tiles: one store, one map.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger

from eoseg.catalog.acquisitions import SceneDecision, SceneFile, SceneStatus, scene_stem
from eoseg.catalog.stac import catalog_uri_for_prefix
from eoseg.compute.cluster import ClusterSpec, dask_cluster
from eoseg.config import MosaicOptions, PredictOptions, TileOptions
from eoseg.mosaic.legend import read_legend
from eoseg.outputs import RunOutputs
from flows.run_summary import quicklook_link
from flows.segment_flows import segment_scene_flow
from tasks.catalog_stages import catalogue_map_task

if TYPE_CHECKING:  # mypy knows the base of the option model that eoseg.config derives at import time
    from eoseg.train.options import TrainingOptions as ClustererTrainingOptions
else:
    from eoseg.config import ClustererTrainingOptions

__all__ = ["SceneMapping", "map_scenes"]


@dataclass(frozen=True)
class SceneMapping:
    """How every scene of a run is mapped: model family, checkpoint (None: train on each scene), options,
    and the legend applied to every map (None: cluster numbers only)."""

    model: str
    weights_uri: str | None
    tile: TileOptions
    training: ClustererTrainingOptions
    predict: PredictOptions
    mosaic: MosaicOptions
    legend_uri: str | None = None

    def describe(self) -> str:
        """The run summary's line about the model (and the legend)."""
        legend = f", legend: `{self.legend_uri}`" if self.legend_uri else ""
        return f"Model: {self.model}, weights: `{self.weights_uri or 'trained on each scene'}`{legend}"

    def check_legend(self) -> None:
        """Refuse a missing or bad legend before any scene is mapped (errors of :func:`read_legend`)."""
        if self.legend_uri:
            read_legend(self.legend_uri)


def _for_deployment_users(message: str) -> str:
    """A deployment's user sets parameters and runs deployments: say so instead of naming CLI commands."""
    message = re.sub(
        r"([Pp])ass --overwrite",
        lambda found: ("R" if found[1] == "P" else "r") + "un again with `-p overwrite=true`",
        message,
    )
    return message.replace(
        "Train one with `eoseg train`.", "Publish it with the train-model deployment (docs/production.md, 6)."
    )


def _map_and_catalogue(
    decision: SceneDecision,
    mapping: SceneMapping,
    *,
    catalog_uri: str,
    scheduler_address: str,
    overwrite: bool,
) -> dict[str, Any]:
    """One scene (or one mosaic of ``scene.tiles``): a ``segment-scene`` subflow run, then its STAC item
    (the item's scene is the first tile). Failures are reported, not raised."""
    logger = get_run_logger()
    scene: SceneFile = decision.scene
    tiles = list(scene.tiles) or None
    name = scene.stem if tiles else scene.name  # how the summary names it: the acquisition, or the file
    status = decision.status.value
    started = time.perf_counter()
    segment = segment_scene_flow.with_options(flow_run_name=f"segment-{scene_stem(decision.map_uri)}")
    state = segment(
        tiles or scene.uri,
        decision.map_uri,
        model=mapping.model,
        weights_uri=mapping.weights_uri,
        reference_uri=None if tiles else scene.reference_uri,  # a tile's reference is not the mosaic's
        tile=mapping.tile,
        training=mapping.training,
        predict=mapping.predict,
        mosaic=mapping.mosaic,
        cluster=ClusterSpec(address=scheduler_address),
        overwrite=overwrite,
        legend_uri=mapping.legend_uri,
        per_tile_maps=RunOutputs.for_map(decision.map_uri).tile_maps
        if tiles
        else None,  # one map per tile too
        return_state=True,
    )
    if not state.is_completed():
        message = _for_deployment_users(state.message or state.name or "")
        logger.error("%s failed: %s", name if tiles else scene.uri, message)
        return {
            "scene": scene.uri,
            "name": name,
            "status": "failed",
            "was": status,
            "error": message,
            "seconds": time.perf_counter() - started,
        }
    result = state.result()
    entry = catalogue_map_task(
        result["map"],
        scene_uri=scene.uri,
        model_uri=result["model"],
        quicklook_uri=result["quicklook"],
        scores_uri=result["scores_file"],
        catalog_uri=catalog_uri,
    )
    seconds = time.perf_counter() - started
    pixels = int(entry["shape"][0]) * int(entry["shape"][1])
    logger.info(
        "%s (%s) -> %s: %d px in %.1f s; STAC item %s (datetime %s from the %s)",
        f"{name} ({len(tiles)} tiles)" if tiles else name,
        status,
        result["map"],
        pixels,
        seconds,
        entry["item"],
        entry["datetime"],
        entry["datetime_source"],
    )
    return {
        "scene": scene.uri,
        "name": name,
        "tiles": len(tiles or [scene.uri]),
        "status": "mapped",
        "was": status,
        "map": result["map"],
        "item": entry["item"],
        "quicklook": result["quicklook"],
        "quicklook_link": quicklook_link(result["quicklook"]),
        "model": result["model"],
        "scores": result["scores"],
        "pixels": pixels,
        "seconds": seconds,
        "datetime": entry["datetime"],
        "datetime_source": entry["datetime_source"],
    }


def map_scenes(
    decisions: list[SceneDecision],
    mapping: SceneMapping,
    *,
    output_prefix: str,
    cluster: ClusterSpec,
    force_overwrite: bool = False,
    mosaic_map_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Map the scenes one after the other on one Dask cluster (each scene is parallel over its chunks).

    Stale and partial outputs are replaced; a new scene's outputs are refused if they appeared meanwhile.
    Returns one summary row per scene (``status`` ``mapped`` or ``failed``).

    With ``mosaic_map_uri`` the scenes are the tiles of one mosaic (on one pixel grid): one
    ``segment-scene`` run maps them all into that map (one store, one model, the chunks of every tile one
    pool of Dask tasks), and one row and one STAC item describe it (the item's scene is the first tile).
    """
    if mosaic_map_uri is not None:
        first = decisions[0]
        tiles = tuple(decision.scene.uri for decision in decisions)
        mosaic = replace(first.scene, tiles=tiles, acquisition=scene_stem(mosaic_map_uri))
        decisions = [SceneDecision(mosaic, first.status, mosaic_map_uri, f"mosaic of {len(tiles)} tiles")]
    catalog_uri = catalog_uri_for_prefix(output_prefix)
    with dask_cluster(cluster) as address:
        return [
            _map_and_catalogue(
                decision,
                mapping,
                catalog_uri=catalog_uri,
                scheduler_address=address,
                overwrite=force_overwrite or decision.status is not SceneStatus.NEW,
            )
            for decision in decisions
        ]
