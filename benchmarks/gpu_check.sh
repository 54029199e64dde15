#!/usr/bin/env bash
# Run every GPU path of the project once, briefly (< 5 min on one GPU), the first time a GPU
# machine is available: featurize on CUDA vs CPU, a DeepSpeed NCCL + bf16 + ZeRO-2 training step,
# evaluate on CUDA vs CPU. See benchmarks/gpu_check.py for what is checked and the options.
#
#   make setup && benchmarks/gpu_check.sh            # on the GPU machine
#   benchmarks/gpu_check.sh --cpu-dry-run            # no GPU: checks the script itself only
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}"
export IAL_NATIVE_DIR="${IAL_NATIVE_DIR:-$PWD/.ial_native}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu_check.py "$@"
