"""Training flows, one per registered model family (``train-<family>``), and fine-tuning for families with it.

The flows are generated from the model-family registry (:mod:`eo_models.family`) so that each has its
family's typed options as a parameter (the Prefect UI renders a documented form) while the stages stay
generic. Prediction with any checkpoint is the ordinary ``predict`` / ``segment-scene`` flow.
"""

# No ``from __future__ import annotations``: each flow's ``training`` annotation is its family's option
# model, a local value that Prefect must see when it builds the parameter schema.

from contextlib import AbstractContextManager
from typing import Any

from prefect import Flow, flow

from eo_models.family import family_names, get_family
from eoseg.compute.cluster import ClusterSpec, dask_cluster, stage_cluster
from eoseg.train.options import finetune_options, training_options
from eoseg.train.stores import read_same_band_stores
from tasks.model_stages import finetune_task, train_task

__all__ = [
    "FINETUNE_FLOWS",
    "TRAIN_FLOWS",
    "finetune_mcl_lc_flow",
    "train_clusterer_flow",
    "train_mcl_lc_flow",
]


def training_cluster(cluster: ClusterSpec) -> AbstractContextManager[str | None]:
    """The cluster a training run uses: the configured one (its GPU workers train), a local one only when
    it has GPU workers (``gpu_workers``); else none: training runs in this process, and a local cluster of
    CPU workers would only cost its start-up (~3-4 s; training never runs on a CPU worker)."""
    return dask_cluster(cluster) if cluster.gpu_workers else stage_cluster(cluster, work_chunks=1)


def _train_flow(family_name: str) -> Flow[..., dict[str, Any]]:
    family = get_family(family_name)
    Options = training_options(family_name)
    defaults = Options()  # the parameter's default, built once as a default expression would be

    def train(
        store_uris: list[str],
        model_uri: str,
        training: Options = defaults,  # type: ignore[valid-type]  # a model derived at import time
        resume_uri: str | None = None,
        stop_after_epoch: int | None = None,
        cluster: ClusterSpec = ClusterSpec(),
        overwrite: bool = False,
    ) -> dict[str, Any]:
        read_same_band_stores(store_uris)  # bad input is refused before a cluster starts
        with training_cluster(cluster) as address:
            return train_task(
                family_name,
                list(store_uris),
                model_uri,
                options=training,
                resume_uri=resume_uri,
                stop_after_epoch=stop_after_epoch,
                overwrite=overwrite,
                scheduler_address=address,
            )

    train.__doc__ = f"""Train the {family.summary}; on a GPU worker when the cluster has one.

    Args:
        store_uris: Tile stores (from `eoseg tile`) with the same band count; patches are sampled from all,
            normalised with band statistics pooled over them.
        model_uri: Checkpoint to write (MODEL.pt, path or s3://).
        training: Training options (defaults: the paper's).
        resume_uri: Continue the run saved in this checkpoint (same stores and options; more epochs).
        stop_after_epoch: Stop after this many of the planned epochs (resume later to finish).
        cluster: The Dask cluster (an existing scheduler, or a local one started for the run).
        overwrite: Replace an existing checkpoint.
    """
    train.__name__ = train.__qualname__ = f"train_{family_name.replace('-', '_')}_flow"
    return flow(name=f"train-{family_name}", log_prints=True)(train)


def _finetune_flow(family_name: str) -> Flow[..., dict[str, Any]]:
    Options = finetune_options(family_name)
    defaults = Options()  # the parameter's default, built once as a default expression would be

    def finetune(
        model_uri: str,
        store_uri: str,
        labels_uri: str,
        tuned_uri: str,
        training: Options = defaults,  # type: ignore[valid-type]  # a model derived at import time
        cluster: ClusterSpec = ClusterSpec(),
        overwrite: bool = False,
    ) -> dict[str, Any]:
        with training_cluster(cluster) as address:
            return finetune_task(
                model_uri,
                store_uri,
                labels_uri,
                tuned_uri,
                options=training,
                overwrite=overwrite,
                scheduler_address=address,
            )

    summary = f"Fine-tune a pre-trained {family_name} checkpoint on a seeded fraction of a scene's labels."
    finetune.__doc__ = f"""{summary}

    Args:
        model_uri: Pre-trained checkpoint (from `eoseg train {family_name}`).
        store_uri: Tile store of the labelled scene.
        labels_uri: Label raster on the store's grid, or GeoJSON polygons (burnt as 255 on 0).
        tuned_uri: Fine-tuned checkpoint to write; `eoseg predict` / `eoseg run --weights` use it.
        training: Fine-tuning options (defaults: the paper's; label fraction 2%).
        cluster: The Dask cluster (an existing scheduler, or a local one started for the run).
        overwrite: Replace an existing checkpoint.
    """
    finetune.__name__ = finetune.__qualname__ = f"finetune_{family_name.replace('-', '_')}_flow"
    return flow(name=f"finetune-{family_name}", log_prints=True)(finetune)


TRAIN_FLOWS: dict[str, Flow[..., dict[str, Any]]] = {name: _train_flow(name) for name in family_names()}
FINETUNE_FLOWS: dict[str, Flow[..., dict[str, Any]]] = {
    name: _finetune_flow(name) for name in family_names() if get_family(name).finetune_params is not None
}

train_clusterer_flow = TRAIN_FLOWS["clusterer"]
train_mcl_lc_flow = TRAIN_FLOWS["mcl-lc"]
finetune_mcl_lc_flow = FINETUNE_FLOWS["mcl-lc"]
