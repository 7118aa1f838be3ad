"""GPU placement, decided in one place for every task that trains or predicts.

When the Dask cluster has workers advertising the ``GPU`` resource, a GPU stage runs there, holding one
slot of the ``eoseg-gpu`` Prefect global concurrency limit so that flow runs do not oversubscribe the
GPUs; without GPU workers it runs in the task's own process (or on any worker, for chunked stages).
Create the limit once per server: ``prefect gcl create eoseg-gpu --limit <number of GPUs>``; without it
the stages run unthrottled (non-strict), so a fresh install works out of the box.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.concurrency.sync import concurrency

from eoseg.compute.cluster import has_gpu_workers

__all__ = ["GPU_CONCURRENCY_LIMIT", "GPU_RESOURCES", "gpu_stage", "run_on_gpu_worker_if_any"]

GPU_CONCURRENCY_LIMIT = "eoseg-gpu"
GPU_RESOURCES = {"GPU": 1}

T = TypeVar("T")


@contextlib.contextmanager
def gpu_stage(client: Any) -> Iterator[bool]:
    """Decide a stage's placement: yields whether ``client``'s cluster has GPU workers, and if so holds one
    slot of the ``eoseg-gpu`` concurrency limit while the stage runs.

    Chunked stages (predict) pass the answer on as ``use_gpu`` so that their chunks go to GPU workers.
    """
    if not has_gpu_workers(client):
        yield False
        return
    with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1):
        yield True


def run_on_gpu_worker_if_any(client: Any, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on a GPU worker of ``client``'s cluster when it has one, else here.

    On a GPU worker the call holds an ``eoseg-gpu`` slot for its whole duration. ``function`` must be a
    module-level (picklable) function; its result comes back to the caller.
    """
    with gpu_stage(client) as use_gpu:
        if use_gpu:
            get_run_logger().info("running %s on a GPU worker", function.__name__)
            result: T = client.submit(function, *args, resources=GPU_RESOURCES, pure=False, **kwargs).result()
            return result
    return function(*args, **kwargs)
