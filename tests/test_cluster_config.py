"""Cluster choice by configuration file: every example in infra/clusters/ parses and builds its spec."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from eoseg.compute.cluster import ClusterSpec, connect, dask_cluster
from eoseg.compute.cluster_config import (
    AddressClusterConfig,
    JobqueueClusterConfig,
    KubernetesClusterConfig,
    LocalClusterConfig,
    load_cluster_config,
)
from eoseg.errors import ConfigurationError

EXAMPLES = Path(__file__).resolve().parents[1] / "infra" / "clusters"


def test_examples_parse_to_their_kinds():
    kinds = {path.name: type(load_cluster_config(str(path))) for path in EXAMPLES.glob("*.yaml")}
    assert kinds == {
        "local.yaml": LocalClusterConfig,
        "existing-scheduler.yaml": AddressClusterConfig,
        "kubernetes-gpu.yaml": KubernetesClusterConfig,
        "slurm-gpu.yaml": JobqueueClusterConfig,
    }


def test_kubernetes_spec_requests_gpus_and_advertises_the_resource():
    config = load_cluster_config(str(EXAMPLES / "kubernetes-gpu.yaml"))
    spec = config.cluster_spec()
    assert spec["kind"] == "DaskCluster" and spec["apiVersion"].startswith("kubernetes.dask.org/")
    assert spec["metadata"] == {"name": "eoseg-gpu", "namespace": "eoseg"}
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 4
    container = worker["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/eoseg:0.1.0-cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][-2:] == ["--resources", "GPU=1"]


def test_slurm_job_script_asks_for_a_gpu_and_advertises_it():
    config = load_cluster_config(str(EXAMPLES / "slurm-gpu.yaml"))
    cluster = config.make_cluster()  # starts only a local scheduler; no job is submitted
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script and "#SBATCH -t 04:00:00" in script
    assert "--resources GPU=1" in script


def test_local_config_file_starts_that_cluster(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("kind: local\nn_workers: 2\ngpu_workers: 1\n")
    with dask_cluster(ClusterSpec(config_file=str(path))) as address, connect(address) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["resources"].get("GPU", 0) for w in workers) == [0, 1]


@pytest.mark.parametrize("text, message", [
    ("kind: cloud\n", "invalid cluster configuration"),
    ("kind: local\nn_workers: 0\n", "n_workers"),
    ("kind: local\nbogus: 1\n", "bogus"),
])  # fmt: skip
def test_invalid_config_files_are_refused(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_cluster_config(str(path))


def test_unreachable_scheduler_is_a_clear_error():
    started = time.monotonic()
    with (
        pytest.raises(
            ConfigurationError, match=re.escape("cannot reach the Dask scheduler at tcp://127.0.0.1:9")
        ),
        dask_cluster(ClusterSpec(address="tcp://127.0.0.1:9")),
    ):
        pass
    # refused at once by a plain TCP connection, not after Dask's 30 s connect timeout
    assert time.monotonic() - started < 10


def test_a_local_cluster_shape_is_given_only_when_it_differs_from_the_defaults():
    assert not ClusterSpec().local_shape_given()
    assert not ClusterSpec(address="tcp://10.0.0.5:8786", config_file="cluster.yaml").local_shape_given()
    assert ClusterSpec(n_workers=3).local_shape_given()
    assert ClusterSpec(processes=False).local_shape_given()
    assert ClusterSpec(memory_limit="4GiB").local_shape_given()
