"""Settings from the environment (``EOSEG_*``), in one place, through pydantic-settings.

Settings are what an operator sets for a machine or a deployment rather than for one run: which Dask
cluster to use, how large the local one is, the name of the Prefect concurrency limit around GPU stages.
Command-line options and flow parameters override them for a run; they never come from code defaults
scattered across modules.

========================  ==================================================================
Environment variable      Meaning
========================  ==================================================================
``EOSEG_CLUSTER``         scheduler address of an existing Dask cluster (``tcp://host:8786``)
``EOSEG_CLUSTER_CONFIG``  cluster configuration file (see ``infra/clusters/``)
``EOSEG_WORKERS``         local cluster: worker processes (default 2)
``EOSEG_THREADS_PER_WORKER``  local cluster: threads per worker (default 1)
``EOSEG_MEMORY_LIMIT``    local cluster: memory limit per worker (default ``auto``)
``EOSEG_GPU_LIMIT``       Prefect global concurrency limit held around GPU stages (``eoseg-gpu``)
``EOSEG_MOSAIC_PIECE_SIZE``  side of the mosaic's pieces in pixels, a multiple of 1024 (default 4096)
``EOSEG_PREFECT``         ``true``: run commands as Prefect flows; ``false``: call the stages directly;
                          unset: flows only when a Prefect API is configured (``PREFECT_API_URL``)
========================  ==================================================================
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "EOSEG_"


def check_memory_limit(value: str) -> str:
    """A Dask worker memory limit: ``auto`` or a byte size Dask reads (``4GiB``, ``4 GB``, ``4000000000``).

    Raises:
        ValueError: anything else (pydantic reports it as the option's or variable's error).
    """
    if value.strip().lower() == "auto":
        return "auto"
    from dask.utils import parse_bytes  # only when a limit is given: keeps refusals fast

    try:
        size = parse_bytes(value)
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise ValueError(f"{value!r} is not a memory size; give 'auto' or e.g. '4GiB'")
    return value


MemoryLimit = Annotated[str, AfterValidator(check_memory_limit)]
"""A worker memory limit checked by :func:`check_memory_limit`."""


class EosegSettings(BaseSettings):
    """Machine- and deployment-level settings, read from ``EOSEG_*`` environment variables.

    Empty environment variables count as unset (a deployment template that leaves ``{{ $VAR }}`` empty
    falls back to the default rather than to an empty address).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", env_ignore_empty=True)

    cluster: str | None = Field(
        default=None,
        description="Scheduler address of an existing Dask cluster (tcp://host:8786). Unset: a local cluster "
        "is started for a stage with many chunks (threads of the command for one chunk, tiling and local "
        "mosaics).",
    )
    cluster_config: str | None = Field(
        default=None,
        description="Cluster configuration file: local, an existing scheduler, Kubernetes (dask-kubernetes "
        "operator) or an HPC queue (dask-jobqueue). Examples in infra/clusters/.",
    )
    workers: int = Field(default=2, ge=1, description="Local cluster: worker processes.")
    threads_per_worker: int = Field(default=1, ge=1, description="Local cluster: threads per worker.")
    memory_limit: MemoryLimit = Field(
        default="auto", description="Local cluster: memory limit per worker ('auto' or e.g. '4GiB')."
    )
    prefect: bool | None = Field(
        default=None,
        description="Run commands as Prefect flows (true) or call the stage functions directly (false). "
        "Unset: when a Prefect API is configured (PREFECT_API_URL in the environment, the active Prefect "
        "profile or prefect.toml) predict runs its flow and tile/mosaic call the stage and record the run "
        "there (no Prefect import); else direct calls: Prefect's temporary server alone costs ~7 s.",
    )
    mosaic_piece_size: int = Field(
        default=4096,
        ge=1024,
        description="Side in pixels of the mosaic's pieces, a multiple of 1024: larger pieces cost less CPU "
        "per pixel (benchmarks/results/tile_mosaic.md), smaller ones hold less memory (~25 MiB per "
        "megapixel of a piece) and spread a small map over more workers.",
    )
    gpu_limit: str = Field(
        default="eoseg-gpu",
        description="Name of the Prefect global concurrency limit held around GPU stages "
        "(create it with `prefect gcl create eoseg-gpu --limit <number of GPUs>`).",
    )


def load_settings(**overrides: Any) -> EosegSettings:
    """The settings in force: ``EOSEG_*`` environment variables, then ``overrides`` that are not None.

    Args:
        **overrides: Values given for this run (command-line options); ``None`` means "not given".

    Returns:
        The validated settings.

    Raises:
        pydantic.ValidationError: A value is out of range (e.g. ``EOSEG_WORKERS=0``).
    """
    return EosegSettings(**{name: value for name, value in overrides.items() if value is not None})
