"""Create (or update) eoseg's work pools and its GPU concurrency limit on a Prefect server.

    python -m deployments.work_pools            # against PREFECT_API_URL; run once per server, and after
                                                # changing a template in deployments/work-pools/

- ``eoseg-process`` (process): flow runs are processes beside the worker (one machine, the compose stack);
  Prefect's default template.
- ``eoseg-docker`` (docker): one ``eoseg:0.1.0-cpu`` container per run on the ``eoseg`` network;
  ``work-pools/docker.json``.
- ``eoseg-kubernetes`` (kubernetes): one Job per run with ``nvidia.com/gpu: {{ gpu_limit }}`` (default 1);
  ``work-pools/kubernetes-gpu.json``.

The same with Prefect's CLI: ``prefect work-pool create eoseg-kubernetes --type kubernetes --overwrite
--base-job-template deployments/work-pools/kubernetes-gpu.json`` (and likewise for the others), then
``prefect gcl create eoseg-gpu --limit N``. Workers of the docker and kubernetes pools need the
``prefect-docker`` / ``prefect-kubernetes`` packages; creating the pools does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "work-pools"
WORK_POOLS: dict[str, tuple[str, str | None, str]] = {
    "eoseg-process": ("process", None, "eoseg flow runs as processes beside the worker"),
    "eoseg-docker": ("docker", "docker.json", "eoseg flow runs in eoseg:0.1.0-cpu containers"),
    "eoseg-kubernetes": (
        "kubernetes",
        "kubernetes-gpu.json",
        "eoseg flow runs as Kubernetes Jobs with a GPU",
    ),
}
GPU_CONCURRENCY_LIMIT = "eoseg-gpu"  # the name tasks.model_stages acquires around GPU stages


def base_job_template(pool_type: str, template_file: str | None) -> dict[str, Any]:
    """The pool's template: the file in deployments/work-pools/, or Prefect's default for process pools."""
    if template_file:
        template: dict[str, Any] = json.loads((TEMPLATES / template_file).read_text())
        return template
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def ensure_work_pools(*, gpus: int = 1) -> list[str]:
    """Create or overwrite the three pools and set the GPU concurrency limit to ``gpus`` slots."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        WorkPoolCreate,
    )
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name, (pool_type, template_file, description) in WORK_POOLS.items():
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=pool_type,
                    description=description,
                    base_job_template=base_job_template(pool_type, template_file),
                ),
                overwrite=True,
            )
        try:
            client.read_global_concurrency_limit_by_name(GPU_CONCURRENCY_LIMIT)
            client.update_global_concurrency_limit(
                GPU_CONCURRENCY_LIMIT, GlobalConcurrencyLimitUpdate(limit=gpus)
            )
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=GPU_CONCURRENCY_LIMIT, limit=gpus)
            )
    return list(WORK_POOLS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create or update eoseg's Prefect work pools.")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="slots of the eoseg-gpu concurrency limit: GPU stages that may run at once",
    )
    args = parser.parse_args(argv)
    for name in ensure_work_pools(gpus=args.gpus):
        pool_type, template_file, _ = WORK_POOLS[name]
        print(f"work pool {name}: type {pool_type}, template {template_file or 'Prefect default'}")
    print(f"global concurrency limit {GPU_CONCURRENCY_LIMIT}: {args.gpus} slot(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
