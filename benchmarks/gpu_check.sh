#!/usr/bin/env bash
# GPU check for a machine lent with a GPU: eo_models' GPU-marked tests, training and inference throughput
# (fp32 and bf16), one results file. Needs only python3 with a CUDA torch and numpy; run from anywhere:
#   bash benchmarks/gpu_check.sh            # results in $OUT (when set, e.g. on the device machine) or benchmarks/results
#   bash benchmarks/gpu_check.sh --dry      # tiny sizes on the CPU (what CI runs)
# Stops itself after GPU_CHECK_LIMIT_S seconds (default 450, inside the 8-minute budget).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${1:-}" != "--dry" ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
exec timeout "${GPU_CHECK_LIMIT_S:-450}" "$PYTHON" benchmarks/gpu_check.py "$@"
