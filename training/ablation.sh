#!/usr/bin/env bash
# Issue 12's advantage ablation on negotiation: every advantage mode trained with the 30-minute recipe's budget
# (training/negotiation.yaml, 11 iterations: what 30 minutes gave on the idle 2-core CPU) from 2 training seeds,
# each judged by `omar eval` on the same 64 fresh scenario seeds (6000000-6000063, both seats), fixed before the
# first run. A cell whose eval.json exists is skipped and an interrupted training run resumes from its
# checkpoint, so the table can be filled over several sittings; it prints as training/ablation_table.py.
#   bash training/ablation.sh                      # every cell, into runs/ablation
#   MODES="grpo" SEEDS="1" bash training/ablation.sh
#   BUDGET=30 RUNS=runs/speed-recipe MODES=hierarchical bash training/ablation.sh   # 30 minutes, not 11 iterations
set -euo pipefail
runs=${RUNS:-runs/ablation}
if [ -n "${BUDGET:-}" ]; then  # the recipe's time budget decides the iterations (issue 23's re-run)
  limits=(--selfplay.iterations 200 --selfplay.max-minutes "$BUDGET")
else
  limits=(--selfplay.iterations 11 --selfplay.max-minutes 600)
fi
for seed in ${SEEDS:-0 1}; do
  for mode in ${MODES:-hierarchical grpo rae hierarchical-critic}; do
    run="$runs/$mode-s$seed"
    [ -f "$run-eval/eval.json" ] && continue
    omar train negotiation --config training/negotiation.yaml --out "$run" --advantage "$mode" \
      --update.seed "$seed" --selfplay.seed $((seed * 100000)) "${limits[@]}"
    omar eval negotiation --max-turns 6 --max-tokens 32 --temperature 0.7 --adapter "$run/adapter" \
      --episodes 64 --seed 6000000 --max-concurrency 32 --run "$run" --out "$run-eval"
  done
done
python training/ablation_table.py "$runs"/*-eval
