#!/usr/bin/env bash
# Remedy runs for the failure of the paper's setting (docs/diagnosis.md):
# distill with configs/remedies.py:VARIANT on DATASET, evaluate on 5 fresh θ0
# next to a random real subset and the real-data ceiling; writes
# results/remedies/<variant>_<dataset>.json.
# Usage: bash scripts/remedies.sh VARIANT DATASET [extra --config overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
variant=$1; dataset=$2; shift 2
name=${NAME:-${variant}_${dataset}}
RUNS=${RUNS:-runs/remedies}
python scripts/distill_eval.py --out "results/remedies/$name.json" --run "$RUNS/$name" -- \
  --config=configs/remedies.py:$variant --config.dataset=$dataset "$@"
