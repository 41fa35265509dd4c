#!/usr/bin/env bash
# Self-play training, then the arena evaluation of the trained adapter.
#   training/launch.sh [RUN_DIR] [ACCELERATE_CONFIG]
#   training/launch.sh runs/negotiation                          # this machine: CPU, or one GPU
#   training/launch.sh runs/negotiation training/accelerate_ddp.yaml   # several GPUs
# Extra flags for `omar train` go in OMAR_TRAIN_ARGS, e.g. OMAR_TRAIN_ARGS="--max-minutes 30".
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${1:-runs/negotiation}
accelerate_config=${2:-}
python=${PYTHON:-.venv/bin/python}
train=(-m langgraph_omar.cli train negotiation --config training/negotiation.yaml --out "$run_dir")
# shellcheck disable=SC2206
extra=(${OMAR_TRAIN_ARGS:-})
if [[ -n "$accelerate_config" ]]; then
  "$python" -m accelerate.commands.launch --config_file "$accelerate_config" "${train[@]}" "${extra[@]}"
else
  "$python" "${train[@]}" "${extra[@]}"
fi
"$python" -m langgraph_omar.cli eval negotiation --max-turns 6 --max-tokens 32 --adapter "$run_dir/adapter" \
  --episodes 64 --seed 1000000 --run "$run_dir" --out "$run_dir/eval"
