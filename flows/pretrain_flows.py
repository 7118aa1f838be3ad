"""mCL-LC flows: self-supervised pre-training on tile stores, supervised fine-tuning on a labelled scene.

Prediction with the fine-tuned checkpoint is the ordinary ``predict`` / ``segment-scene`` flow
(``model="mcl-lc"``, ``weights_uri=...``).
"""

from __future__ import annotations

from prefect import flow

from eoseg.compute.cluster import ClusterSpec, dask_cluster
from eoseg.train.pretrain_config import MclLcFinetuneOptions, MclLcPretrainOptions
from eoseg.train.pretrain_patches import read_same_band_stores
from tasks.pretrain_stages import finetune_mcl_lc_task, pretrain_mcl_lc_task


@flow(name="pretrain-mcl-lc", log_prints=True)
def pretrain_mcl_lc_flow(
    store_uris: list[str],
    model_uri: str,
    training: MclLcPretrainOptions = MclLcPretrainOptions(),
    resume_uri: str | None = None,
    stop_after_epoch: int | None = None,
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
) -> dict:
    """Pre-train mCL-LC (Tang et al. 2023) on unlabelled tile stores; GPU worker when the cluster has one.

    Args:
        store_uris: Tile stores (from `eoseg tile`) with the same band count; patches are sampled from all.
        model_uri: Checkpoint to write (MODEL.pt, path or s3://).
        training: Pre-training options (defaults: the paper's).
        resume_uri: Continue the run saved in this checkpoint (same stores and options; more epochs).
        stop_after_epoch: Stop after this many of the planned epochs (resume later to finish).
        cluster: The Dask cluster (an existing scheduler, or a local one started for the run).
        overwrite: Replace an existing checkpoint.
    """
    read_same_band_stores(store_uris)  # bad input is refused before a cluster starts
    with dask_cluster(cluster) as address:
        return pretrain_mcl_lc_task(list(store_uris), model_uri, options=training, resume_uri=resume_uri,
                                    stop_after_epoch=stop_after_epoch, overwrite=overwrite,
                                    scheduler_address=address)  # fmt: skip


@flow(name="finetune-mcl-lc", log_prints=True)
def finetune_mcl_lc_flow(
    model_uri: str,
    store_uri: str,
    labels_uri: str,
    tuned_uri: str,
    training: MclLcFinetuneOptions = MclLcFinetuneOptions(),
    cluster: ClusterSpec = ClusterSpec(),
    overwrite: bool = False,
) -> dict:
    """Fine-tune a pre-trained mCL-LC checkpoint on a small, seeded fraction of a scene's labels.

    Args:
        model_uri: Pre-trained checkpoint (from `eoseg train mcl-lc`).
        store_uri: Tile store of the labelled scene.
        labels_uri: Label raster on the store's grid, or GeoJSON polygons (burnt as 255 on 0).
        tuned_uri: Fine-tuned checkpoint to write; `eoseg predict` / `eoseg run --weights` use it.
        training: Fine-tuning options (defaults: the paper's; label fraction 2%).
        cluster: The Dask cluster (an existing scheduler, or a local one started for the run).
        overwrite: Replace an existing checkpoint.
    """
    with dask_cluster(cluster) as address:
        return finetune_mcl_lc_task(model_uri, store_uri, labels_uri, tuned_uri, options=training,
                                    overwrite=overwrite, scheduler_address=address)
