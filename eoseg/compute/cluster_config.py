"""Cluster choice by a configuration file: local, an existing scheduler, Kubernetes, or an HPC queue.

``eoseg --cluster-config cluster.yaml run ...`` (or ``EOSEG_CLUSTER_CONFIG``) reads one of the
documents below; examples live in ``infra/clusters/``. Kubernetes uses the dask-kubernetes operator
(``DaskCluster`` custom resource) and HPC queues use dask-jobqueue; both are optional extras
(``pip install 'eoseg[kubernetes]'`` / ``'eoseg[hpc]'``), imported only when such a file is used.

GPU workers always advertise the Dask resource ``GPU=1`` (one model per GPU), which is what eoseg's
training and inference stages ask for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from eoseg.errors import ConfigurationError
from eoseg.settings import MemoryLimit

if TYPE_CHECKING:
    from dask_jobqueue.core import JobQueueCluster


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalClusterConfig(_Config):
    """A LocalCluster on this machine (the default)."""

    kind: Literal["local"] = "local"
    n_workers: int = Field(default=2, ge=1, description="Worker processes.")
    threads_per_worker: int = Field(default=1, ge=1, description="Threads per worker.")
    memory_limit: MemoryLimit = Field(default="auto", description="Memory limit per worker, e.g. '4GiB'.")
    gpu_workers: int = Field(default=0, ge=0, description="How many workers advertise GPU=1.")


class AddressClusterConfig(_Config):
    """An existing Dask scheduler."""

    kind: Literal["address"] = "address"
    address: str = Field(description="Scheduler address, e.g. tcp://dask-scheduler:8786.")


class KubernetesClusterConfig(_Config):
    """A DaskCluster created through the dask-kubernetes operator for the run, removed afterwards."""

    kind: Literal["kubernetes"] = "kubernetes"
    name: str = Field(default="eoseg", description="DaskCluster name (a run suffix is not added).")
    namespace: str | None = Field(default=None, description="Namespace; default: the current one.")
    image: str = Field(description="Image with eoseg installed, e.g. the infra/Dockerfile.cuda build.")
    n_workers: int = Field(default=2, ge=1, description="Worker pods.")
    worker_cpu: str = Field(default="4", description="CPU request and limit per worker pod.")
    worker_memory: str = Field(default="16Gi", description="Memory request and limit per worker pod.")
    gpus_per_worker: int = Field(default=0, ge=0, le=1, description="nvidia.com/gpu per worker (0 or 1).")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment (no secrets: use "
        "Kubernetes secrets mounted into the image's environment).",
    )

    def cluster_spec(self) -> dict[str, Any]:
        """The DaskCluster custom resource (also usable with `kubectl apply`)."""
        from dask_kubernetes.operator import make_cluster_spec

        resources = {
            "requests": {"cpu": self.worker_cpu, "memory": self.worker_memory},
            "limits": {"cpu": self.worker_cpu, "memory": self.worker_memory},
        }
        if self.gpus_per_worker:
            resources["limits"]["nvidia.com/gpu"] = str(self.gpus_per_worker)
        spec: dict[str, Any] = make_cluster_spec(
            name=self.name,
            image=self.image,
            n_workers=self.n_workers,
            resources=resources,
            env=self.env or None,
        )
        if self.gpus_per_worker:
            container = spec["spec"]["worker"]["spec"]["containers"][0]
            container["args"] = [*container.get("args", []), "--resources", "GPU=1"]
        if self.namespace:
            spec["metadata"]["namespace"] = self.namespace
        return spec


class JobqueueClusterConfig(_Config):
    """Workers submitted as batch jobs to an HPC scheduler through dask-jobqueue."""

    kind: Literal["jobqueue"] = "jobqueue"
    system: Literal["slurm", "pbs", "sge", "lsf"] = Field(default="slurm", description="The batch system.")
    jobs: int = Field(default=2, ge=1, description="Batch jobs (one worker each).")
    cores: int = Field(default=8, ge=1, description="Cores per job.")
    memory: str = Field(default="32GB", description="Memory per job.")
    queue: str | None = Field(default=None, description="Queue/partition.")
    walltime: str = Field(default="02:00:00", description="Job wall time.")
    gpus_per_job: int = Field(default=0, ge=0, le=1, description="GPUs per job (0 or 1).")
    job_extra_directives: list[str] = Field(default_factory=list, description="Extra #SBATCH/#PBS lines.")

    def make_cluster(self) -> JobQueueCluster:
        """The dask-jobqueue cluster of ``system`` (no job is submitted until it is scaled)."""
        from dask_jobqueue.lsf import LSFCluster
        from dask_jobqueue.pbs import PBSCluster
        from dask_jobqueue.sge import SGECluster
        from dask_jobqueue.slurm import SLURMCluster

        classes: dict[str, type[JobQueueCluster]] = {
            "slurm": SLURMCluster,
            "pbs": PBSCluster,
            "sge": SGECluster,
            "lsf": LSFCluster,
        }
        directives = list(self.job_extra_directives)
        worker_args: list[str] = []
        if self.gpus_per_job:
            directives.append("--gres=gpu:1" if self.system == "slurm" else "-l ngpus=1")
            worker_args = ["--resources", "GPU=1"]
        return classes[self.system](
            cores=self.cores,
            processes=1,
            memory=self.memory,
            queue=self.queue,
            walltime=self.walltime,
            job_extra_directives=directives,
            worker_extra_args=worker_args,
        )


ClusterConfig = Annotated[
    LocalClusterConfig | AddressClusterConfig | KubernetesClusterConfig | JobqueueClusterConfig,
    Field(discriminator="kind"),
]


def load_cluster_config(
    path: str,
) -> LocalClusterConfig | AddressClusterConfig | KubernetesClusterConfig | JobqueueClusterConfig:
    """Read and validate a cluster configuration file (YAML or JSON)."""
    import yaml

    file = Path(path)
    if not file.exists():
        raise ConfigurationError(f"{path}: cluster configuration not found")
    try:
        document = yaml.safe_load(file.read_text())
        return TypeAdapter(ClusterConfig).validate_python(document)
    except Exception as error:
        raise ConfigurationError(f"{path}: invalid cluster configuration: {error}") from error
