"""Which Dask cluster a run uses, chosen by configuration rather than code.

By default a :class:`distributed.LocalCluster` with worker processes on this machine; with an address
(``--cluster tcp://host:8786`` or ``EOSEG_CLUSTER``) an existing scheduler, which may run on
Kubernetes or an HPC queue (see ``infra/``). Prefect tasks receive the scheduler address (a string),
never a client or a cluster object, and connect to it themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from eoseg.settings import ENV_PREFIX, MemoryLimit, load_settings

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

logger = logging.getLogger("eoseg.compute.cluster")
CLUSTER_ENV_VAR = f"{ENV_PREFIX}CLUSTER"
CONFIG_ENV_VAR = f"{ENV_PREFIX}CLUSTER_CONFIG"


class ClusterSpec(BaseModel):
    """The Dask cluster for a run: an existing scheduler, or a local cluster started for the run."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        default=None,
        description="Scheduler address of an existing Dask cluster (e.g. tcp://10.0.0.5:8786). Empty: start "
        f"a local cluster, unless the {CLUSTER_ENV_VAR} environment variable names one.",
    )
    n_workers: int = Field(default=2, ge=1, description="Local cluster: number of worker processes.")
    threads_per_worker: int = Field(default=1, ge=1, description="Local cluster: threads per worker.")
    memory_limit: MemoryLimit = Field(
        default="auto", description="Local cluster: memory limit per worker, e.g. '4GiB'."
    )
    processes: bool = Field(default=True, description="Local cluster: worker processes (True) or threads.")
    gpu_workers: int = Field(
        default=0,
        ge=0,
        description="Local cluster: how many of the workers advertise the GPU=1 resource "
        "(one model per GPU).",
    )
    config_file: str | None = Field(
        default=None,
        description="A cluster configuration file (local, address, kubernetes or jobqueue; see "
        f"infra/clusters/). Empty: the fields above, unless {CONFIG_ENV_VAR} names a file.",
    )

    def local_shape_given(self) -> bool:
        """Whether a local cluster's shape (workers, threads per worker, memory limit, processes, GPU
        workers) differs from the defaults: a local cluster was asked for, not left to eoseg."""
        defaults = ClusterSpec()
        return any(getattr(self, name) != getattr(defaults, name) for name in _LOCAL_SHAPE)

    def resolved_address(self) -> str | None:
        """The scheduler address: this spec's, else ``EOSEG_CLUSTER`` (read when the run starts)."""
        return self.address or load_settings().cluster or None

    def resolved_config_file(self) -> str | None:
        """The cluster configuration file: this spec's, else ``EOSEG_CLUSTER_CONFIG``."""
        return self.config_file or load_settings().cluster_config or None


_LOCAL_SHAPE = ("n_workers", "threads_per_worker", "memory_limit", "processes", "gpu_workers")


def _client(*args: Any, **kwargs: Any) -> Client:
    """``distributed.Client(*args, **kwargs)``, typed (distributed leaves its constructor unannotated)."""
    from distributed import Client

    return Client(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in distributed


def _start_local_cluster(spec: ClusterSpec) -> LocalCluster:
    import dask
    import distributed  # noqa: F401  (registers the "distributed" config section before it is overridden)

    # The worker's statistical profiler costs ~18 % CPU on chunk tasks (measured); nannies hand the
    # configuration in force when they start to their workers.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        return _start_local_cluster_with_current_config(spec)


def _start_local_cluster_with_current_config(spec: ClusterSpec) -> LocalCluster:
    from distributed import LocalCluster

    cluster: LocalCluster = LocalCluster(  # type: ignore[no-untyped-call]  # unannotated in distributed
        n_workers=0 if spec.gpu_workers else spec.n_workers,
        threads_per_worker=spec.threads_per_worker,
        memory_limit=spec.memory_limit,
        processes=spec.processes,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    )
    if spec.gpu_workers:
        from distributed.nanny import Nanny
        from distributed.worker import Worker

        worker_class = Nanny if spec.processes else Worker
        base: dict[str, Any] = {"nthreads": spec.threads_per_worker, "memory_limit": spec.memory_limit}
        if spec.processes:
            base["silence_logs"] = logging.WARNING
        specs = {}
        for index in range(spec.n_workers):
            options = dict(base)
            if index < spec.gpu_workers:
                options["resources"] = {"GPU": 1}
            specs[f"worker-{index}"] = {"cls": worker_class, "options": options}
        cluster.worker_spec.update(specs)
        cluster.scale(len(specs))  # type: ignore[no-untyped-call]  # unannotated in distributed
    return cluster


@contextlib.contextmanager
def stage_cluster(
    spec: ClusterSpec | None = None, *, work_chunks: int, threads: bool = False
) -> Iterator[str | None]:
    """:func:`dask_cluster` for a stage of ``work_chunks`` chunks: no local cluster for one chunk, nor for
    work that threads do as well (``threads``).

    With no configured cluster (``--cluster``, ``EOSEG_CLUSTER``, a configuration file), ``None`` is
    yielded and the work runs on threads in this process when there is at most one chunk (starting worker
    processes costs ~2-3 s, more than a chunk's work: benchmarks/results/command_overhead.md) or when
    ``threads`` is set and no local cluster shape differs from the defaults
    (:meth:`ClusterSpec.local_shape_given`): the caller's chunk work releases the GIL (the tile stage:
    GDAL decoding and Blosc compression), so worker processes would only add their start-up, imports and
    pickling (benchmarks/results/tile_mosaic.md: ~3.5x the CPU seconds of threads for the same tiling).

    Yields:
        The scheduler address, or ``None`` (no cluster; :func:`connect` then yields no client).

    Raises:
        ConfigurationError: The configured scheduler cannot be reached.
    """
    spec = spec or ClusterSpec()
    threads = threads and not spec.local_shape_given()
    if (work_chunks <= 1 or threads) and not spec.resolved_address() and not spec.resolved_config_file():
        if work_chunks <= 1:
            logger.info("one chunk of work: running on threads in this process (no Dask cluster started)")
        else:
            logger.info(
                "%d chunks of GIL-releasing work: running on threads in this process (no Dask cluster "
                "started; --workers N or --cluster ADDRESS to use one)",
                work_chunks,
            )
        yield None
        return
    with dask_cluster(spec) as address:
        yield address


def _probe_scheduler(address: str, *, timeout_s: float = 5.0) -> None:
    """Fail at once when nothing listens at a ``tcp://``/``tls://`` scheduler address.

    Dask's client retries a refused connection until its 30 s timeout; one plain TCP connection answers
    the common mistakes (wrong port, scheduler not started) in milliseconds. Other schemes are left to Dask.

    Raises:
        OSError: the connection is refused, times out after ``timeout_s`` seconds, or the host is unknown.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.port is None:
        return
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
        pass


@contextlib.contextmanager
def dask_cluster(spec: ClusterSpec | None = None) -> Iterator[str]:
    """Yield a scheduler address: the configured one, or that of a local cluster started here."""
    spec = spec or ClusterSpec()
    address = spec.resolved_address()
    config_file = spec.resolved_config_file()
    if config_file and not address:
        with _cluster_from_config_file(config_file) as configured:
            yield configured
        return
    if address:
        try:
            _probe_scheduler(address)
            with _client(address, set_as_default=False, timeout="30s") as client:
                logger.info(
                    "using the Dask cluster at %s (%d workers); dashboard %s",
                    address,
                    len(client.scheduler_info(n_workers=-1)["workers"]),
                    client.dashboard_link,
                )
        except OSError as error:
            from eoseg.errors import ConfigurationError

            raise ConfigurationError(
                f"cannot reach the Dask scheduler at {address} ({error}); check the "
                f"address (--cluster / {CLUSTER_ENV_VAR}) and that the scheduler runs"
            ) from error
        yield address
        return
    cluster = _start_local_cluster(spec)
    try:
        with _client(cluster) as client:
            client.wait_for_workers(spec.n_workers, timeout=120)
        logger.info(
            "started a local Dask cluster: %d worker process(es) x %d thread(s); dashboard %s",
            spec.n_workers,
            spec.threads_per_worker,
            cluster.dashboard_link,
        )
        yield cluster.scheduler_address
    finally:
        _close_local_cluster(cluster)


def _close_local_cluster(cluster: LocalCluster, *, timeout: float = 10.0) -> None:
    """Stop the workers while the scheduler still runs, then the scheduler.

    Closing the scheduler first leaves each worker in a heartbeat to a vanished scheduler, which logs a
    ``CommClosedError`` traceback after a successful run; workers told to leave first close cleanly.
    """
    import time

    try:
        cluster.scale(0)  # type: ignore[no-untyped-call]  # unannotated in distributed
        deadline = time.monotonic() + timeout
        while cluster.scheduler_info.get("workers") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        cluster.close()


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[Client | None]:
    """A ``distributed.Client`` for ``address`` (None: no client; work runs on local threads)."""
    if address is None:
        yield None
        return
    with _client(address, set_as_default=False) as client:
        yield client


def has_gpu_workers(client: Any) -> bool:
    """Whether any worker of the cluster advertises a ``GPU`` resource."""
    if client is None:
        return False
    workers = (
        client.scheduler_info(n_workers=-1).get("workers", {}) if hasattr(client, "scheduler_info") else {}
    )
    return any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values())


@contextlib.contextmanager
def _cluster_from_config_file(path: str) -> Iterator[str]:
    from eoseg.compute.cluster_config import load_cluster_config

    config = load_cluster_config(path)
    logger.info("cluster configuration %s: %s", path, config.kind)
    if config.kind == "local":
        local = ClusterSpec(
            n_workers=config.n_workers,
            threads_per_worker=config.threads_per_worker,
            memory_limit=config.memory_limit,
            gpu_workers=config.gpu_workers,
        )
        with dask_cluster(local) as address:
            yield address
        return
    if config.kind == "address":
        with dask_cluster(ClusterSpec(address=config.address)) as address:
            yield address
        return
    if config.kind == "kubernetes":
        from dask_kubernetes.operator import KubeCluster

        cluster = KubeCluster(custom_cluster_spec=config.cluster_spec(), namespace=config.namespace)
    else:
        cluster = config.make_cluster()
        cluster.scale(jobs=config.jobs)  # type: ignore[no-untyped-call]  # unannotated in dask-jobqueue
    try:
        logger.info("started a %s Dask cluster; dashboard %s", config.kind, cluster.dashboard_link)
        yield cluster.scheduler_address
    finally:
        cluster.close()
