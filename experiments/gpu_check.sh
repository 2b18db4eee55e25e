#!/usr/bin/env bash
# The GPU check: at most 8 minutes on one H100 / H200 (experiments/gpu_check.py says what it measures).
#   bash experiments/gpu_check.sh [out.json]      (default: docs/results/gpu_check.json)
# Needs jax with CUDA (pip install -U "jax[cuda12]" or "jax[cuda13]") and, on jax >= 0.11, flax >= 0.12.10 in the
# environment whose `python` is first on PATH; refuses to run on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/results/gpu_check.json}"
platform=$(python -c "import jax; print(jax.devices()[0].platform)")
if [ "$platform" != "gpu" ]; then
  echo "gpu_check: no GPU visible to jax (platform: $platform); install jax[cuda12] on a GPU machine" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 480 s hard limit; the check stops starting new parts after 420 s and writes the JSON after every part
timeout 480 python -m experiments.gpu_check --json "$out" --budget-s 420
echo "gpu_check: wrote $out"
