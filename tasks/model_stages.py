"""Tasks for the stages that run a model: train, predict, and what comes after (quick-look, evaluate)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile

from prefect import get_run_logger, task
from prefect.concurrency.sync import concurrency

from eoseg import storage
from eoseg.cluster import connect, has_gpu_workers
from eoseg.config import ClustererTrainingOptions
from eoseg.inference import predict_store
from eoseg.training import train_clusterer_on_store
from tasks.run_names import named_after
from tasks.storage_stages import STORAGE_RETRIES, _retry_unless_bad_input

logger = logging.getLogger("eoseg.tasks")

# Global concurrency limit that caps GPU stages across all flow runs. Create it once per server:
#   prefect gcl create eoseg-gpu --limit <number of GPUs>
# Without it the stages run unthrottled (non-strict), so a fresh install works out of the box.
GPU_CONCURRENCY_LIMIT = "eoseg-gpu"


@task(name="train-clusterer", task_run_name=named_after("train-clusterer", "store_uri"))
def train_clusterer_task(
    store_uri: str,
    model_uri: str,
    *,
    options: ClustererTrainingOptions,
    overwrite: bool,
    scheduler_address: str | None,
) -> dict:
    """Train the clusterer: on a GPU worker when the cluster has one, else in this process."""
    kwargs = dict(params=options.training_params(), max_patches=options.max_patches, overwrite=overwrite)
    with connect(scheduler_address) as client:
        if has_gpu_workers(client):
            get_run_logger().info("training on a GPU worker of %s", scheduler_address)
            with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1):
                future = client.submit(train_clusterer_on_store, store_uri, model_uri, resources={"GPU": 1},
                                       pure=False, **kwargs)
                summary = future.result()
            get_run_logger().info("trained on worker %s", summary["ran_on"])
            return summary
    return train_clusterer_on_store(store_uri, model_uri, **kwargs)


@task(
    name="predict",
    task_run_name=named_after("predict", "store_uri"),
    retry_condition_fn=_retry_unless_bad_input,
    **STORAGE_RETRIES,
)
def predict_task(
    store_uri: str,
    model_uri: str,
    labels_uri: str,
    *,
    halo: int | None,
    overwrite: bool,
    scheduler_address: str | None,
    attention_pooling: str = "scene",
) -> dict:
    """Tiled inference on the cluster (GPU workers only, when there are any); returns label store metadata.

    A retry resumes: chunks already written by the failed attempt are kept.
    """
    with connect(scheduler_address) as client:
        use_gpu = has_gpu_workers(client)
        with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1) if use_gpu else contextlib.nullcontext():
            info = predict_store(store_uri, model_uri, labels_uri, halo=halo, overwrite=overwrite, client=client,
                                 use_gpu=use_gpu, attention_pooling=attention_pooling)
    return info.to_attrs()


@task(
    name="quicklook",
    task_run_name=named_after("quicklook", "scene_uri"),
    retry_condition_fn=_retry_unless_bad_input,
    **STORAGE_RETRIES,
)
def quicklook_task(scene_uri: str, cog_uri: str, png_uri: str, *, title: str | None = None) -> str:
    """A PNG beside the COG: the scene and its label map side by side, in class colours."""
    from eoseg.quicklook import write_quicklook

    with tempfile.TemporaryDirectory(prefix="eoseg-ql-") as scratch, storage.gdal_env(scene_uri):
        local_png = os.path.join(scratch, "quicklook.png")
        write_quicklook(storage.gdal_path(scene_uri), storage.gdal_path(cog_uri), local_png, title=title)
        storage.publish_local_file(local_png, png_uri, overwrite=True)
    return png_uri


@task(name="evaluate", task_run_name=named_after("evaluate", "cog_uri"))
def evaluate_task(cog_uri: str, reference_uri: str, scores_uri: str, *, ignore_values: tuple[int, ...] = ()) -> dict:
    """Score the map against a reference raster or GeoJSON; both cluster mappings; saves JSON beside it."""
    from eoseg.evaluate import evaluate_label_map
    from eoseg.reference import is_vector_reference, rasterize_reference

    with tempfile.TemporaryDirectory(prefix="eoseg-eval-") as scratch:
        local_map = storage.fetch_to_local(cog_uri, scratch)
        reference = storage.fetch_to_local(reference_uri, scratch)
        if is_vector_reference(reference):
            reference = rasterize_reference(reference, local_map, os.path.join(scratch, "reference.tif"))
        scores = {
            method: evaluate_label_map(local_map, reference, ignore_values=ignore_values, method=method).to_dict()
            for method in ("majority", "hungarian")
        }
        local_scores = os.path.join(scratch, "scores.json")
        with open(local_scores, "w") as handle:
            json.dump({"reference": reference_uri, **scores}, handle, indent=2, sort_keys=True)
        storage.publish_local_file(local_scores, scores_uri, overwrite=True)
    for method, report in scores.items():
        get_run_logger().info("%s mapping: F1 %.3f, IoU %.3f, OA %.3f, kappa %.3f", method, report["f1"],
                              report["iou"], report["oa"], report["kappa"])
    return scores
