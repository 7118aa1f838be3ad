"""The flows behind eoseg's deployments (``deployments/prefect.yaml``).

- ``city-run``: segment a list of scenes, or every scene under a prefix, into OUTPUT_PREFIX/NAME.tif;
- ``reprocess-new-acquisitions``: the same, only for scenes without an up-to-date map (scheduled, and
  triggered by ``eoseg.acquisition.created`` events); a run with nothing new does nothing and says so;
- ``train-model``: train a model on one scene or a set and publish the checkpoint where later runs
  reference it (``weights_uri``).

Each scene is one ``segment-scene`` subflow run followed by a ``catalogue`` task (STAC Item beside the
map, listed in OUTPUT_PREFIX/catalog.json); all scenes of a run share one Dask cluster. A markdown
artifact summarises every run. Credentials never travel as parameters: they come from the worker's
environment (``AWS_*``) or from a Prefect Secret block whose *name* is a parameter.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
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
from eoseg.config import ClustererTrainingOptions, MosaicOptions, PredictOptions, TileOptions
from eoseg.errors import ConfigurationError, EosegError
from eoseg.io import storage
from eoseg.logs import configure_logging
from eoseg.train.stores import reusable_tile_store
from flows.segment_flows import segment_scene_flow
from tasks.catalog_stages import catalogue_map_task
from tasks.model_stages import train_task
from tasks.storage_stages import tile_task

_ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")
# The parameters deployments/prefect.yaml fills from the environment at deploy time (`{{ $NAME }}`). Prefect
# turns an unset variable into "", so an empty value of one of these names the variable to set.
DEPLOYMENT_VARIABLES = {
    "scenes_prefix": "EOSEG_SCENES_PREFIX",
    "output_prefix": "EOSEG_OUTPUT_PREFIX",
    "weights_uri": "EOSEG_WEIGHTS_URI",
}
# The explicit weights_uri that means "train the clusterer on each scene" (never an empty value).
TRAIN_PER_SCENE = "train"
# A presigned quick-look link stays valid this long (SigV4's maximum is 7 days).
QUICKLOOK_LINK_SECONDS = 7 * 24 * 3600
# Local quick-looks up to this size are embedded in the artifact (a data: URI); larger ones are named.
QUICKLOOK_INLINE_BYTES = 512 * 1024
_CREDENTIAL_KEYS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region_name": "AWS_REGION",
}


class ScenesFailedError(EosegError, RuntimeError):
    """Some scenes of a run failed; the others were mapped and catalogued."""


def _how_to_set(name: str) -> str:
    variable = DEPLOYMENT_VARIABLES.get(name)
    with_run = f"pass it with the run (`prefect deployment run ... -p {name}=...`)"
    if variable:
        return f"set {variable} and run `prefect deploy` again, or {with_run}"
    return with_run


def configured(value: str | None, name: str, *, required: bool = False) -> str | None:
    """A parameter's value, None when empty; refuses a ``{{ $VAR }}`` left unresolved at deploy time.

    Args:
        value: the parameter's value as the run received it.
        name: the parameter's name (the error names it, and the environment variable that fills it).
        required: refuse an empty value instead of returning None.

    Raises:
        ConfigurationError: required and empty (``prefect deploy`` turns an unset ``{{ $NAME }}`` into ""),
            or a placeholder left unresolved.
    """
    if value is None or not str(value).strip():
        if required:
            raise ConfigurationError(f"{name} is empty, and this run needs it: {_how_to_set(name)}.")
        return None
    match = _ENV_PLACEHOLDER.search(str(value))
    if match:
        raise ConfigurationError(
            f"{name} is {value!r}: the environment variable {match[1]} was not set when this deployment was "
            f"created. Set it and run `prefect deploy` again, or pass {name} with the run."
        )
    return str(value).strip()


def weights_choice(value: str | None) -> str | None:
    """The checkpoint to apply, or None for the explicit choice ``train`` (train on each scene).

    Raises:
        ConfigurationError: the value is empty: it must name a checkpoint or say ``train``.
    """
    if value is None or not str(value).strip():
        variable = DEPLOYMENT_VARIABLES["weights_uri"]
        raise ConfigurationError(
            f"weights_uri is empty: set {variable} to a published checkpoint (e.g. "
            f"s3://bucket/models/v1.pt) or to '{TRAIN_PER_SCENE}' to train a model on each scene, and run "
            f"`prefect deploy` again; or pass `-p weights_uri=...` with the run."
        )
    weights = configured(value, "weights_uri", required=True)
    return None if weights == TRAIN_PER_SCENE else weights


@contextlib.contextmanager
def s3_credentials(secret_block: str | None) -> Iterator[None]:
    """Use the S3 credentials held by a Prefect Secret block for the duration (default: the environment).

    The block holds a JSON object with ``aws_access_key_id``, ``aws_secret_access_key`` and optionally
    ``aws_session_token``, ``endpoint_url``, ``region_name``. Values go into this process's environment
    (which a local Dask cluster started inside inherits) and are never logged; a remote Dask cluster needs
    the same credentials in its own environment (infra/k8s mounts them from a Kubernetes Secret).
    """
    if not secret_block:
        yield
        return
    import s3fs
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(secret_block).get()
    except ValueError as error:  # Prefect: "Unable to find block document named ..."
        raise ConfigurationError(
            f"credentials_secret names the Secret block {secret_block!r}, which the Prefect server does not "
            f"hold: create it (docs/production.md, 'Object storage') or pass another credentials_secret"
        ) from error
    values = json.loads(value) if isinstance(value, str) else dict(value)
    unknown = set(values) - set(_CREDENTIAL_KEYS)
    if unknown or "aws_secret_access_key" not in values:
        raise ConfigurationError(
            f"the Secret block {secret_block!r} must hold a JSON object with "
            f"aws_access_key_id and aws_secret_access_key (unexpected keys: {sorted(unknown)})"
        )
    saved = {env: os.environ.get(env) for env in _CREDENTIAL_KEYS.values()}
    os.environ.update({_CREDENTIAL_KEYS[key]: str(item) for key, item in values.items()})
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for env, previous in saved.items():
            if previous is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = previous
        s3fs.S3FileSystem.clear_instance_cache()


def _artifact_key(kind: str, prefix: str) -> str:
    return f"eoseg-{kind}-{hashlib.sha1(prefix.encode()).hexdigest()[:10]}"


def _format_scores(scores: dict | None) -> str:
    if not scores:
        return "-"
    majority = scores.get("majority", {})
    return f"F1 {majority.get('f1', float('nan')):.3f}, OA {majority.get('oa', float('nan')):.3f} (majority)"


def quicklook_link(uri: str) -> str | None:
    """An address a browser opens for a quick-look PNG, or None.

    On S3: a presigned HTTPS (or the endpoint's HTTP) URL, valid for ``QUICKLOOK_LINK_SECONDS``; the
    artifact never holds a credential, only the signature. Local files up to ``QUICKLOOK_INLINE_BYTES``:
    the PNG itself as a ``data:`` URI. Larger local files: None (the table names the path).
    """
    if storage.is_s3(uri):
        return storage.s3_filesystem().url(uri, expires=QUICKLOOK_LINK_SECONDS)
    try:
        with open(uri, "rb") as handle:
            data = handle.read(QUICKLOOK_INLINE_BYTES + 1)
    except OSError:
        return None
    if len(data) > QUICKLOOK_INLINE_BYTES:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _quicklook_cell(quicklook: str | None, link: str | None) -> str:
    if not quicklook:
        return "-"
    if not link:
        return f"`{quicklook}`"
    if link.startswith("data:"):  # embedded once, under "Quick-looks"
        return f"{PurePosixPath(quicklook).name} (below)"
    return f"[{PurePosixPath(quicklook).name}]({link})"


def _summary_row(row: dict[str, Any]) -> str:
    """One markdown table row of a run's summary."""
    quicklook = row.get("quicklook")
    link = row.get("quicklook_link")
    if row["status"] == "failed":
        last = (row.get("error") or "")[:200]
    else:
        last = _format_scores(row.get("scores"))
    cells = [
        PurePosixPath(row["scene"]).name,
        f"{row['status']} ({row['was']})",
        f"{row['pixels']:,}" if row.get("pixels") else "-",
        f"{row['seconds']:.1f}" if row.get("seconds") is not None else "-",
        row.get("map") or "-",
        row.get("item") or "-",
        _quicklook_cell(quicklook, link),
        last,
    ]
    return "| " + " | ".join(cells) + " |"


def _summary_markdown(title: str, lines: list[str], rows: list[dict[str, Any]]) -> str:
    """The run's artifact: title, context lines, one table row per scene, then the quick-looks themselves."""
    parts = [f"# {title}", "", *lines, ""]
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        parts += [f"**{len(failed)} of {len(rows)} scene(s) failed:**", ""]
        parts += [f"- `{row['scene']}`: {(row.get('error') or '')[:500]}" for row in failed]
        parts += [""]
    if rows:
        parts += [
            "| scene | status | pixels | seconds | map | STAC item | quick-look | scores |",
            "|---|---|---:|---:|---|---|---|---|",
            *[_summary_row(row) for row in rows],
        ]
    images = [row for row in rows if row.get("quicklook_link")]
    if images:
        parts += ["", "## Quick-looks", ""]
        for row in images:
            name = PurePosixPath(row["scene"]).name
            parts += [f"**{name}**", "", f"![quick-look of {name}]({row['quicklook_link']})", ""]
        if any(storage.is_s3(row["quicklook"]) for row in images):
            days = QUICKLOOK_LINK_SECONDS // 86400
            parts += [f"(Quick-look links are presigned and expire {days} days after the run.)"]
    return "\n".join(parts) + "\n"


def _titled(title: str, rows: list[dict[str, Any]]) -> str:
    """The title, led by the failure count when scenes failed (the artifact list shows titles)."""
    failed = sum(row["status"] == "failed" for row in rows)
    return f"FAILED {failed} of {len(rows)} scene(s): {title}" if failed else title


def _for_deployment_users(message: str) -> str:
    """A deployment's user sets parameters and runs deployments: say so instead of naming CLI commands."""
    message = re.sub(r"[Pp]ass --overwrite", "Run again with `-p overwrite=true`", message)
    return message.replace(
        "Train one with `eoseg train`.", "Publish it with the train-model deployment (docs/production.md, 6)."
    )


def _map_and_catalogue(
    scene: SceneFile,
    map_uri: str,
    *,
    status: str,
    catalog_uri: str,
    model: str,
    weights_uri: str | None,
    tile: TileOptions,
    training: ClustererTrainingOptions,
    predict: PredictOptions,
    mosaic: MosaicOptions,
    scheduler_address: str,
    overwrite: bool,
) -> dict[str, Any]:
    """One scene: a ``segment-scene`` subflow run, then its STAC item. Failures are reported, not raised."""
    logger = get_run_logger()
    started = time.perf_counter()
    segment = segment_scene_flow.with_options(flow_run_name=f"segment-{scene.stem}")
    state = segment(
        scene.uri,
        map_uri,
        model=model,
        weights_uri=weights_uri,
        reference_uri=scene.reference_uri,
        tile=tile,
        training=training,
        predict=predict,
        mosaic=mosaic,
        cluster=ClusterSpec(address=scheduler_address),
        overwrite=overwrite,
        return_state=True,
    )
    if not state.is_completed():
        message = _for_deployment_users(state.message or state.name)
        logger.error("%s failed: %s", scene.uri, message)
        return {
            "scene": scene.uri,
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
        scene.name,
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


def _map_scenes(
    decisions: list[SceneDecision],
    *,
    output_prefix: str,
    cluster: ClusterSpec,
    force_overwrite: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Map the scenes one after the other on one Dask cluster (each scene is parallel over its chunks).

    Stale and partial outputs are replaced; a new scene's outputs are refused if they appeared meanwhile.
    """
    catalog_uri = catalog_uri_for_prefix(output_prefix)
    with dask_cluster(cluster) as address:
        return [
            _map_and_catalogue(
                decision.scene,
                decision.map_uri,
                status=decision.status.value,
                catalog_uri=catalog_uri,
                scheduler_address=address,
                overwrite=force_overwrite or decision.status is not SceneStatus.NEW,
                **options,
            )
            for decision in decisions
        ]


def _finish(
    kind: str,
    title: str,
    lines: list[str],
    rows: list[dict[str, Any]],
    key_prefix: str,
    result: dict[str, Any],
):
    """Publish the run's artifact; fail the run if a scene failed, else complete it with a summary message."""
    title = _titled(title, rows)
    create_markdown_artifact(
        _summary_markdown(title, lines, rows), key=_artifact_key(kind, key_prefix), description=title
    )
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        others = "; the others were mapped" if len(failed) < len(rows) else ""
        raise ScenesFailedError(
            f"{len(failed)} of {len(rows)} scene(s) failed{others} (see the run's artifact): "
            + "; ".join(f"{row['scene']}: {row['error']}" for row in failed)
        )
    return Completed(message=title, data=result)


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
):
    """Segment scenes end to end into OUTPUT_PREFIX/<scene name>.tif, each with a STAC item in the catalogue.

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
    """
    configure_logging()
    logger = get_run_logger()
    output_prefix = configured(output_prefix, "output_prefix", required=True)
    weights = weights_choice(weights_uri)
    prefix = configured(scenes_prefix, "scenes_prefix")
    with s3_credentials(configured(credentials_secret, "credentials_secret")):
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
        if duplicates:
            raise ConfigurationError(f"several scenes would write the same map: {duplicates}")
        logger.info("city run: %d scene(s) -> %s", len(scenes), output_prefix)
        decisions = [
            SceneDecision(scene, SceneStatus.NEW, map_uri_for(scene.uri, output_prefix), "requested")
            for scene in scenes
        ]
        existing = [d.map_uri for d in decisions if storage.exists(d.map_uri)]
        if existing and not overwrite:
            raise ConfigurationError(
                f"{len(existing)} of {len(decisions)} map(s) already exist under {output_prefix} "
                f"({', '.join(PurePosixPath(uri).name for uri in existing[:5])}"
                f"{', ...' if len(existing) > 5 else ''}): run again with `-p overwrite=true` to replace "
                "them, or pass another output_prefix"
            )
        started = time.perf_counter()
        rows = _map_scenes(
            decisions,
            output_prefix=output_prefix,
            cluster=cluster,
            model=model,
            weights_uri=weights,
            tile=tile,
            training=training,
            predict=predict,
            mosaic=mosaic,
            force_overwrite=overwrite,
        )
    done = [row for row in rows if row["status"] != "failed"]
    title = (
        f"city-run: {len(done)} of {len(rows)} scene(s) mapped, "
        f"{sum(row.get('pixels', 0) for row in done):,} px in {time.perf_counter() - started:.0f} s"
    )
    lines = [
        f"Output prefix: `{output_prefix}`; catalogue: `{catalog_uri_for_prefix(output_prefix)}`",
        f"Model: {model}, weights: `{weights or 'trained on each scene'}`",
    ]
    return _finish(
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
):
    """Map only the scenes under a prefix that have no up-to-date map; a run with nothing new does nothing.

    A scene is redone when it has no COG (new, or an interrupted run), a COG older than the scene, or a COG
    without its STAC item (the item is written last). Idempotent: run it as often as you like.

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
    """
    configure_logging()
    logger = get_run_logger()
    scenes_prefix = configured(scenes_prefix, "scenes_prefix", required=True)
    output_prefix = configured(output_prefix, "output_prefix", required=True)
    weights = weights_choice(weights_uri)
    with s3_credentials(configured(credentials_secret, "credentials_secret")):
        plan = plan_reprocessing(scenes_prefix, output_prefix, recursive=recursive)
        todo = [decision for decision in plan if decision.needs_processing]
        for decision in plan:
            logger.info("%s: %s (%s)", decision.scene.name, decision.status.value, decision.reason)
        lines = [
            f"Scenes prefix: `{scenes_prefix}`; output prefix: `{output_prefix}`; catalogue: "
            f"`{catalog_uri_for_prefix(output_prefix)}`",
            f"Model: {model}, weights: `{weights or 'trained on each scene'}`",
        ]
        up_to_date = [d.scene.uri for d in plan if not d.needs_processing]
        if not todo:
            title = (
                f"reprocess-new-acquisitions: nothing new: all {len(plan)} scene(s) under {scenes_prefix} "
                f"have up-to-date maps"
            )
            logger.info(title)
            return _finish(
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
            ", ".join(f"{d.scene.name} ({d.status.value})" for d in todo),
        )
        started = time.perf_counter()
        rows = _map_scenes(
            todo,
            output_prefix=output_prefix,
            cluster=cluster,
            model=model,
            weights_uri=weights,
            tile=tile,
            training=training,
            predict=predict,
            mosaic=mosaic,
        )
    done = [row for row in rows if row["status"] != "failed"]
    title = (
        f"reprocess-new-acquisitions: {len(done)} scene(s) mapped "
        f"({', '.join(PurePosixPath(row['scene']).name for row in done) or 'none'}), "
        f"{len(up_to_date)} already up to date; {sum(row.get('pixels', 0) for row in done):,} px in "
        f"{time.perf_counter() - started:.0f} s"
    )
    logger.info(title)
    return _finish(
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
):
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
                    tile_task(
                        scene,
                        store,
                        chunk_size=tile.chunk_size,
                        overwrite=True,
                        allow_ungeoreferenced=tile.allow_ungeoreferenced,
                        scheduler_address=address,
                    )
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
    create_markdown_artifact(
        "\n".join([f"# {title}", "", *lines]) + "\n", key=_artifact_key("model", model_uri), description=title
    )
    logger.info(title)
    return Completed(
        message=title, data={"model_uri": model_uri, "scenes": scenes, "stores": stores, "training": summary}
    )
