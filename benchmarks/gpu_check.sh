#!/usr/bin/env bash
# The GPU check: one table (CUDA vs CPU agreement, HIERAMP d16 images/s, amplification overhead,
# rded evaluator step, one-process DDP step) in under 8 minutes on one GPU. See benchmarks/gpu_check.py.
#   benchmarks/gpu_check.sh                      # the GPU when present
#   benchmarks/gpu_check.sh --device cpu --tiny  # seconds on a CPU (what the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then python=.venv/bin/python; fi
exec "$python" -m benchmarks.gpu_check "$@"
