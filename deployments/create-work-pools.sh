#!/usr/bin/env bash
# Create (or update) eoseg's three work pools on the Prefect server that PREFECT_API_URL points at.
#   eoseg-process     runs flows as processes beside the worker (`prefect worker start --pool eoseg-process`)
#   eoseg-docker      one container per flow run (needs `pip install prefect-docker` where the worker runs)
#   eoseg-kubernetes  one Job per flow run, GPU by default (needs `pip install prefect-kubernetes`)
# Only the workers need the prefect-docker / prefect-kubernetes packages; creating the pools does not.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefect="${PREFECT:-prefect}"

"$prefect" --no-prompt work-pool create eoseg-process --type process --overwrite
"$prefect" --no-prompt work-pool create eoseg-docker --type docker --overwrite \
    --base-job-template "$here/work-pools/docker.json"
"$prefect" --no-prompt work-pool create eoseg-kubernetes --type kubernetes --overwrite \
    --base-job-template "$here/work-pools/kubernetes-gpu.json"
# Caps the GPU stages (train, predict on GPU workers) across all runs: one slot per GPU.
"$prefect" --no-prompt global-concurrency-limit create eoseg-gpu --limit "${EOSEG_GPUS:-1}" 2>/dev/null \
    || "$prefect" --no-prompt global-concurrency-limit update eoseg-gpu --limit "${EOSEG_GPUS:-1}"
