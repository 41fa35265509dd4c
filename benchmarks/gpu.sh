#!/usr/bin/env bash
# One command for a lent GPU: the engine against model.generate at batch 128, the update's tokens/s and MFU,
# on a Qwen2-1.5B-shaped model with random weights (no download). Extra arguments go to benchmarks/gpu.py
# (e.g. --device cpu --tiny for a smoke test here).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 600 "$PYTHON" benchmarks/gpu.py "$@"
