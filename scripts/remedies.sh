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
mkdir -p results/remedies
distill="--config=configs/remedies.py:$variant --config.dataset=$dataset $*"
evaluate="--config=configs/remedies.py:$variant --config.dataset=$dataset --config.mode=evaluate --config.checkpoint=$RUNS/$name/distill --config.evaluate.seeds=5"
rm -rf "$RUNS/$name"
python -m distill_jax.main $distill --workdir="$RUNS/$name/distill"
python -m distill_jax.main $evaluate --workdir="$RUNS/$name/eval"
python - "$RUNS/$name" "results/remedies/$name.json" "$distill" "$evaluate" <<'PY'
import json, sys
run = sys.argv[1]
r = json.load(open(f"{run}/eval/result_evaluate.json"))
r["command"] = (f"python -m distill_jax.main {sys.argv[3]} --workdir={run}/distill && "
                f"python -m distill_jax.main {sys.argv[4]} --workdir={run}/eval")
json.dump(r, open(sys.argv[2], "w"), indent=2, sort_keys=True)
PY
