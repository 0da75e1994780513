#!/usr/bin/env bash
# Measured runs of the recipes (configs/recipes.py): distill, then evaluate on 5 fresh θ0 next to a
# random real subset and the real-data ceiling; writes results/recipes/<name>.json, timed, for the
# README's quick start and recipes table.
# Usage: bash scripts/recipes.sh quickstart
#        bash scripts/recipes.sh DATASET [minilm|tiny] [extra --config overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/recipes}
if [ "$1" = quickstart ]; then
  # Exactly the README's quick-start command: configs/agnews.py as it is.
  exec python scripts/distill_eval.py --one-command --out results/recipes/quickstart_ag_news.json \
    --run "$RUNS/quickstart" -- --config=configs/agnews.py
fi
dataset=$1; variant=${2:-minilm}; shift; [ $# -gt 0 ] && shift
config=configs/$dataset.py; [ "$dataset" = ag_news ] && config=configs/agnews.py
python scripts/distill_eval.py --out "results/recipes/${dataset}_${variant}.json" --run "$RUNS/${dataset}_${variant}" -- \
  "--config=$config:$variant" "$@"
