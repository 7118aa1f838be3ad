"""Task: train the clusterer on the tile stores of a set of scenes (GPU worker when the cluster has one)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.concurrency.sync import concurrency

from eoseg.cluster import connect, has_gpu_workers
from eoseg.config import ClustererTrainingOptions
from eoseg.training_sets import train_clusterer_on_stores
from tasks.model_stages import GPU_CONCURRENCY_LIMIT
from tasks.run_names import named_after


@task(name="train-clusterer-on-scenes", task_run_name=named_after("train-clusterer", "model_uri"))
def train_clusterer_on_stores_task(
    store_uris: list[str],
    model_uri: str,
    *,
    options: ClustererTrainingOptions,
    overwrite: bool,
    scheduler_address: str | None,
) -> dict:
    """Train one clusterer on the patches of all ``store_uris``; returns the training summary."""
    kwargs = dict(params=options.training_params(), max_patches=options.max_patches, overwrite=overwrite)
    with connect(scheduler_address) as client:
        if has_gpu_workers(client):
            get_run_logger().info("training on a GPU worker of %s", scheduler_address)
            with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1):
                future = client.submit(
                    train_clusterer_on_stores,
                    store_uris,
                    model_uri,
                    resources={"GPU": 1},
                    pure=False,
                    **kwargs,
                )
                return future.result()
    return train_clusterer_on_stores(store_uris, model_uri, **kwargs)
