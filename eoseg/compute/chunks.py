"""Run one function over many chunks on Dask, with a progress bar and progress logs.

Each stage hands :func:`map_chunks` a plain, picklable function and a list of small arguments (a chunk
index and window, never pixels). With a ``distributed.Client`` the calls are scheduled on the cluster's
workers (optionally only on workers that advertise a resource, e.g. ``GPU``); without one, Dask's local
threaded scheduler runs them. Progress goes to a terminal bar when stderr is a terminal, and to the
``eoseg`` logger every 10 % (Prefect shows those lines in the flow run's logs).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("eoseg.compute.chunks")


class _ProgressReporter:
    def __init__(self, label: str, total: int, *, show_bar: bool | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._next_log_fraction = 0.1
        self._started = time.perf_counter()
        self._bar = None
        if show_bar is None:
            show_bar = sys.stderr.isatty()
        if show_bar and total > 0:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)
        logger.info("%s: %d chunk(s) to process", label, total)

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        if self.total and self.done / self.total >= self._next_log_fraction - 1e-9:
            elapsed = time.perf_counter() - self._started
            logger.info("%s: %d/%d chunks (%.0f%%) in %.1f s", self.label, self.done, self.total,
                        100 * self.done / self.total, elapsed)
            while self._next_log_fraction <= self.done / self.total + 1e-9:
                self._next_log_fraction += 0.1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def active_client():
    """The ``distributed.Client`` of the current context, or None."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def current_worker_address() -> str:
    """The address of the Dask worker running this call, or ``"local"`` outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def map_chunks(
    function: Callable[..., T],
    items: Sequence[Any],
    *,
    label: str,
    client=None,
    resources: dict[str, float] | None = None,
    show_bar: bool | None = None,
) -> list[T]:
    """``[function(item) for item in items]`` computed in parallel; results in the order of ``items``.

    Args:
        function: a module-level (picklable) function of one argument.
        items: small arguments, one per chunk.
        label: what the progress bar and logs call this work.
        client: a ``distributed.Client``; defaults to the active one, else Dask's threaded scheduler.
        resources: worker resources each call needs on a distributed cluster, e.g. ``{"GPU": 1}``.
        show_bar: force the terminal progress bar on or off (default: on when stderr is a terminal).

    Raises:
        The first exception raised by ``function``; outstanding work is cancelled.
    """
    client = client if client is not None else active_client()
    reporter = _ProgressReporter(label, len(items), show_bar=show_bar)
    try:
        if not items:
            return []
        if client is not None:
            return _map_on_cluster(client, function, items, label, resources, reporter)
        return _map_on_threads(function, items, reporter)
    finally:
        reporter.close()


def _map_on_cluster(client, function, items, label, resources, reporter) -> list:
    from distributed import as_completed

    prefix = f"{label.replace(' ', '-')}-{uuid.uuid4().hex[:8]}"
    futures = client.map(
        function, items, key=[f"{prefix}-{i}" for i in range(len(items))], resources=resources, pure=False
    )
    index_of = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    try:
        with client.as_current():  # as_completed looks up the current client
            for future in as_completed(futures):
                results[index_of[future.key]] = future.result()  # re-raises the worker's exception
                reporter.advance()
    except BaseException:
        client.cancel(futures)
        raise
    return results


def _map_on_threads(function, items, reporter) -> list:
    import dask
    from dask.callbacks import Callback

    class _Advance(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: D401 (dask hook)
            reporter.advance()

    tasks = [dask.delayed(function, pure=False)(item) for item in items]
    with _Advance():
        return list(dask.compute(*tasks, scheduler="threads"))
