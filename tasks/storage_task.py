"""The ``@task`` of every stage that reads or writes storage: named after its scene, retried with backoff.

Storage hiccups (an S3 503, a dropped connection) are worth retrying; bad input (an :class:`EosegError`)
is not: it fails the same way every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import State, Task, task
from prefect.client.schemas import TaskRun
from prefect.tasks import exponential_backoff

from eoseg.errors import EosegError
from tasks.run_names import named_after

__all__ = ["retry_unless_bad_input", "storage_task"]

P = ParamSpec("P")
R = TypeVar("R")


def retry_unless_bad_input(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's ``retry_condition_fn``: retry a failed run unless it failed on bad input."""
    try:
        state.result()
    except EosegError:
        return False
    except Exception:  # noqa: BLE001 (any other failure, e.g. of storage, is worth a retry)
        return True
    return False


def storage_task(name: str, *, run_name_from: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for a storage stage: runs named ``NAME[scene]`` from parameter ``run_name_from``.

    Up to 3 retries with exponential backoff and jitter, unless the run failed on bad input.
    """
    return task(
        name=name,
        task_run_name=named_after(name, run_name_from),
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_unless_bad_input,
    )
