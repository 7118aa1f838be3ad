"""Tasks for mCL-LC: pre-training and fine-tuning, on a GPU worker when the cluster has one."""

from __future__ import annotations

from prefect import get_run_logger, task

from eoseg.compute.cluster import connect, has_gpu_workers
from eoseg.train.pretrain_config import MclLcFinetuneOptions, MclLcPretrainOptions
from eoseg.train.pretrain import finetune_mcl_lc_on_store, pretrain_mcl_lc_on_stores


def _run_on_gpu_worker_if_any(function, scheduler_address: str | None, *args, **kwargs) -> dict:
    with connect(scheduler_address) as client:
        if has_gpu_workers(client):
            get_run_logger().info("training on a GPU worker of %s", scheduler_address)
            return client.submit(function, *args, resources={"GPU": 1}, pure=False, **kwargs).result()
    return function(*args, **kwargs)


@task(name="pretrain-mcl-lc")
def pretrain_mcl_lc_task(
    store_uris: list[str],
    model_uri: str,
    *,
    options: MclLcPretrainOptions,
    resume_uri: str | None,
    stop_after_epoch: int | None,
    overwrite: bool,
    scheduler_address: str | None,
) -> dict:
    """Self-supervised mCL-LC pre-training on one or more tile stores; returns a small summary."""
    return _run_on_gpu_worker_if_any(
        pretrain_mcl_lc_on_stores, scheduler_address, store_uris, model_uri,
        params=options.pretrain_params(), max_patches=options.max_patches,
        checkpoint_every=options.checkpoint_every, resume_uri=resume_uri, stop_after_epoch=stop_after_epoch,
        overwrite=overwrite,
    )  # fmt: skip


@task(name="finetune-mcl-lc")
def finetune_mcl_lc_task(
    model_uri: str,
    store_uri: str,
    labels_uri: str,
    tuned_uri: str,
    *,
    options: MclLcFinetuneOptions,
    overwrite: bool,
    scheduler_address: str | None,
) -> dict:
    """Fine-tune a pre-trained mCL-LC checkpoint on a labelled fraction of one scene."""
    return _run_on_gpu_worker_if_any(
        finetune_mcl_lc_on_store, scheduler_address, model_uri, store_uri, labels_uri, tuned_uri,
        params=options.finetune_params(), num_classes=options.num_classes,
        label_fraction=options.label_fraction, ignore_values=tuple(options.ignore_values),
        patch_size=options.patch_size, max_patches=options.max_patches, overwrite=overwrite,
    )  # fmt: skip
