"""Run one function over many chunks on Dask, with a progress bar and progress logs.

Each stage hands :func:`map_chunks` a plain, picklable function and a list of small arguments (a chunk
index and window, never pixels). With a ``distributed.Client`` the calls are scheduled on the cluster's
workers (optionally only on workers that advertise a resource, e.g. ``GPU``); without one, a pool of
threads in this process runs them (as many as Dask's threaded scheduler would use). Progress goes to a
terminal bar when stderr is a terminal, and to the ``eoseg`` logger every 10 % (Prefect shows those
lines in the flow run's logs).
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
                "[bold]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
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
            logger.info(
                "%s: %d/%d chunks (%.0f%%) in %.1f s",
                self.label,
                self.done,
                self.total,
                100 * self.done / self.total,
                elapsed,
            )
            while self._next_log_fraction <= self.done / self.total + 1e-9:
                self._next_log_fraction += 0.1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def active_client() -> Any:
    """The ``distributed.Client`` of the current context, or None."""
    if "distributed" not in sys.modules:  # no client can exist; importing distributed costs ~0.3 s
        return None
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def current_worker_address() -> str:
    """The address of the Dask worker running this call, or ``"local"`` outside a worker."""
    if "distributed" not in sys.modules:
        return "local"
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
    client: Any = None,
    resources: dict[str, float] | None = None,
    show_bar: bool | None = None,
    local: bool = False,
) -> list[T]:
    """``[function(item) for item in items]`` computed in parallel; results in the order of ``items``.

    Args:
        function: a module-level (picklable) function of one argument.
        items: small arguments, one per chunk.
        label: what the progress bar and logs call this work.
        client: a ``distributed.Client``; defaults to the active one, else threads of this process.
        resources: worker resources each call needs on a distributed cluster, e.g. ``{"GPU": 1}``.
        show_bar: force the terminal progress bar on or off (default: on when stderr is a terminal).
        local: run on threads of this process even when a client is active or given
            (for work whose results are files on this machine's disk).

    Raises:
        The first exception raised by ``function``; outstanding work is cancelled.
    """
    if local:
        client = None
    elif client is None:
        client = active_client()
    reporter = _ProgressReporter(label, len(items), show_bar=show_bar)
    try:
        if not items:
            return []
        if client is not None:
            return _map_on_cluster(client, function, items, label, resources, reporter)
        return _map_on_threads(function, items, reporter)
    finally:
        reporter.close()


def _map_on_cluster(
    client: Any,
    function: Callable[..., T],
    items: Sequence[Any],
    label: str,
    resources: dict[str, float] | None,
    reporter: _ProgressReporter,
) -> list[T]:
    from distributed import as_completed

    prefix = f"{label.replace(' ', '-')}-{uuid.uuid4().hex[:8]}"
    futures = client.map(
        function, items, key=[f"{prefix}-{i}" for i in range(len(items))], resources=resources, pure=False
    )
    index_of = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    try:
        with client.as_current():  # as_completed looks up the current client
            for future in as_completed(futures):  # type: ignore[no-untyped-call]  # unannotated in distributed
                results[index_of[future.key]] = future.result()  # re-raises the worker's exception
                reporter.advance()
    except BaseException:
        client.cancel(futures)
        raise
    return results


def _map_on_threads(function: Callable[..., T], items: Sequence[Any], reporter: _ProgressReporter) -> list[T]:
    """Threads of this process; on the first failure, pending calls are dropped and running ones awaited.

    Waiting matters: a call still running after the caller has cleaned up its partial output would write
    into (and re-create) what was just removed.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from dask.system import CPU_COUNT

    executor = ThreadPoolExecutor(max_workers=min(CPU_COUNT, len(items)), thread_name_prefix="eoseg-chunk")
    try:
        futures = [executor.submit(function, item) for item in items]
        # as_completed, not a wait() loop over the pending set: that loop costs O(chunks) per finished
        # chunk in this thread (quadratic; thousands of small chunks starved the workers of the GIL)
        for future in as_completed(futures):
            future.result()  # re-raises the call's exception
            reporter.advance()
        return [future.result() for future in futures]
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
