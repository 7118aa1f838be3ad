"""Tasks for the stages that run a model: train, fine-tune, predict, and what follows (quick-look, evaluate).

Every family goes through the same tasks (the family is a parameter); GPU placement is
:mod:`tasks.gpu`'s.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

from prefect import get_run_logger, task

from eoseg.compute.cluster import connect
from eoseg.config import PredictOptions
from eoseg.io import storage
from eoseg.io.publish import publish_file
from eoseg.predict.stage import predict_store
from eoseg.train.finetune import finetune_on_store
from eoseg.train.options import TrainingOptions
from eoseg.train.stage import train_on_stores
from tasks.gpu import GPU_CONCURRENCY_LIMIT, gpu_stage, run_on_gpu_worker_if_any
from tasks.run_names import named_after
from tasks.storage_task import storage_task

__all__ = [
    "GPU_CONCURRENCY_LIMIT",
    "baseline_task",
    "evaluate_task",
    "finetune_task",
    "predict_task",
    "quicklook_task",
    "train_task",
]

logger = logging.getLogger("eoseg.tasks")


@task(name="train", task_run_name=named_after("train-{family}", "model_uri"))
def train_task(
    family: str,
    store_uris: list[str],
    model_uri: str,
    *,
    options: TrainingOptions,
    overwrite: bool,
    scheduler_address: str | None,
    resume_uri: str | None = None,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Train a model of ``family`` on tile stores: on a GPU worker when the cluster has one, else here."""
    stage = {key: getattr(options, key) for key in options.stage_fields}
    with connect(scheduler_address) as client:
        summary = run_on_gpu_worker_if_any(
            client, train_on_stores, family, store_uris, model_uri, params=options.training_params(),
            resume_uri=resume_uri, stop_after_epoch=stop_after_epoch, overwrite=overwrite, **stage,
        )  # fmt: skip
    get_run_logger().info("trained %s on %s", family, summary["ran_on"])
    return summary


@task(name="finetune")
def finetune_task(
    model_uri: str,
    store_uri: str,
    labels_uri: str,
    tuned_uri: str,
    *,
    options: TrainingOptions,
    overwrite: bool,
    scheduler_address: str | None,
) -> dict[str, Any]:
    """Fine-tune a pre-trained checkpoint on a labelled fraction of one scene (on a GPU worker if any)."""
    # num_classes ... max_patches are fields of the family's fine-tuning model, derived at import time
    # (eoseg.train.options.finetune_options): mypy knows only their base, TrainingOptions.
    with connect(scheduler_address) as client:
        return run_on_gpu_worker_if_any(
            client, finetune_on_store, model_uri, store_uri, labels_uri, tuned_uri,
            params=options.training_params(), num_classes=options.num_classes,  # type: ignore[attr-defined]
            label_fraction=options.label_fraction, ignore_values=tuple(options.ignore_values),  # type: ignore[attr-defined]
            patch_size=options.patch_size, max_patches=options.max_patches, overwrite=overwrite,  # type: ignore[attr-defined]
        )  # fmt: skip


@storage_task("predict", run_name_from="store_uri")
def predict_task(
    store_uri: str,
    model_uri: str,
    labels_uri: str,
    *,
    options: PredictOptions,
    overwrite: bool,
    scheduler_address: str | None,
) -> dict[str, Any]:
    """Tiled inference on the cluster (GPU workers only, when there are any); returns label store metadata.

    A retry resumes: chunks already written by the failed attempt are kept.
    """
    with connect(scheduler_address) as client, gpu_stage(client) as use_gpu:
        info = predict_store(
            store_uri, model_uri, labels_uri, halo=options.halo, overwrite=overwrite, client=client,
            use_gpu=use_gpu, attention_pooling=options.attention_pooling, precision=options.precision,
            refine=options.refine,
        )  # fmt: skip
    return info.to_attrs()


@storage_task("quicklook", run_name_from="scene_uri")
def quicklook_task(
    scene_uri: str | list[str],
    cog_uri: str,
    png_uri: str,
    *,
    title: str | None = None,
    class_names: dict[int, str] | None = None,
) -> str:
    """A PNG beside the COG: the scene (a VRT of its tiles if it has many) and its label map, with a key.

    ``class_names``: ``{label: name}`` shown in the key beside each label's colour (e.g. the reference
    class each cluster maps to).
    """
    from eoseg.mosaic.quicklook import write_quicklook
    from eoseg.scene.vrt import scene_raster_path

    first = scene_uri if isinstance(scene_uri, str) else scene_uri[0]
    with tempfile.TemporaryDirectory(prefix="eoseg-ql-") as scratch, storage.gdal_env(first):
        local_png = os.path.join(scratch, "quicklook.png")
        scene_path = scene_raster_path(scene_uri, scratch)
        write_quicklook(
            scene_path, storage.gdal_path(cog_uri), local_png, title=title, label_names=class_names
        )
        publish_file(local_png, png_uri, overwrite=True)
    return png_uri


@task(name="evaluate", task_run_name=named_after("evaluate", "cog_uri"))
def evaluate_task(
    cog_uri: str,
    reference_uri: str,
    scores_uri: str,
    *,
    ignore_values: tuple[int, ...] = (),
    class_names: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Score the map against a reference raster or GeoJSON; both cluster mappings; saves JSON beside it.

    ``class_names``: see :func:`eoseg.evaluate.class_names.reference_class_names` (names in the reports).
    """
    from eoseg.evaluate.class_names import reference_class_names
    from eoseg.evaluate.reference import is_vector_reference, rasterize_reference
    from eoseg.evaluate.scores import evaluate_label_map

    names = reference_class_names(reference_uri if not storage.is_s3(reference_uri) else "", class_names)
    with tempfile.TemporaryDirectory(prefix="eoseg-eval-") as scratch:
        local_map = storage.fetch_to_local(cog_uri, scratch)
        reference = storage.fetch_to_local(reference_uri, scratch)
        if is_vector_reference(reference):
            reference = rasterize_reference(reference, local_map, os.path.join(scratch, "reference.tif"))
        reports = {
            method: evaluate_label_map(
                local_map, reference, ignore_values=ignore_values, method=method
            ).with_class_names(names)
            for method in ("majority", "hungarian")
        }
        scores = {method: report.to_dict() for method, report in reports.items()}
        local_scores = os.path.join(scratch, "scores.json")
        with open(local_scores, "w") as handle:
            json.dump({"reference": reference_uri, **scores}, handle, indent=2, sort_keys=True)
        publish_file(local_scores, scores_uri, overwrite=True)
    for method, report in reports.items():
        get_run_logger().info(
            "%s mapping of %s: F1 %.3f, IoU %.3f, OA %.3f, kappa %s",
            method, cog_uri, report.f1, report.iou, report.oa,
            "n/a" if report.kappa is None else f"{report.kappa:.3f}",
        )  # fmt: skip
        if report.warning():
            get_run_logger().warning("%s: %s", cog_uri, report.warning())
    return scores


@task(name="baseline", task_run_name=named_after("baseline", "scene_uri"))
def baseline_task(scene_uri: str, model_uri: str, baseline_uri: str, *, seed: int = 0) -> str:
    """The raw-pixel k-means map of the scene with the model's K and band statistics (evaluate.baseline)."""
    from eoseg.evaluate.baseline import kmeans_label_map
    from eoseg.train.checkpoints import load_checkpoint_from

    checkpoint = load_checkpoint_from(model_uri)
    with storage.gdal_env(scene_uri):
        return kmeans_label_map(
            storage.gdal_path(scene_uri), baseline_uri,
            num_clusters=int(checkpoint["num_classes"]), band_mean=checkpoint["band_mean"],
            band_std=checkpoint["band_std"], seed=seed,
        )  # fmt: skip
