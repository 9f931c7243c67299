#!/usr/bin/env bash
# The GPU check of the performance issue: on a machine with an NVIDIA GPU, run the JAX tests,
# then the training and prediction benchmarks with elektronn in the JAX mode on the GPU and
# PyTorch on the same GPU beside it.  Results (text and JSON) go to OUT (default
# bench_results/gpu); put the absolute figures on the issue.
#
#   pip install -e . "jax[cuda12]" torch==2.13.0     # CUDA builds of jaxlib and PyTorch
#   bash benchmarks/gpu_check.sh [OUT]
#
# Stops at the first failure: no GPU visible to JAX or PyTorch, a failing test, a benchmark error.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench_results/gpu}"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import jax; d = jax.devices()[0]; print('JAX on', d); assert d.platform == 'gpu', d"
python -c "import torch; assert torch.cuda.is_available(); print('PyTorch on', torch.cuda.get_device_name())"

export ELEKTRONN_MODE=jax ELEKTRONN_BENCH_TORCH_DEVICE=cuda
python -m pytest -q tests/ops/test_jax.py tests/test_backend.py 2>&1 | tee "$OUT/tests_jax.txt"
python benchmarks/bench_train.py --json "$OUT/bench_train.json" 2>&1 | tee "$OUT/bench_train.txt"
python benchmarks/bench_predict.py --json "$OUT/bench_predict.json" 2>&1 | tee "$OUT/bench_predict.txt"
echo "gpu_check: done; figures in $OUT (% peak is against the CPU's matmul, ignore it here)"
