#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): step times, peak memory, trial packing and a float64
# CPU/GPU comparison, in one JSON file. Under 8 minutes on one GPU; --dry-run: CPU, tiny sizes.
#   bash benchmarks/gpu_check.sh [--dry-run] [--out FILE] [--steps N] [--skip-packing]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 python benchmarks/gpu_check.py "$@"
