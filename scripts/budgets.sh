#!/usr/bin/env bash
# The field's protocol (issue 23): MiniLM-L6 recipe at K examples per class, evaluated on 10 fresh θ0 next to
# Random / K-Center / Herding real subsets of the same size, a random real subset of the same bytes and the
# real-data ceiling; writes results/budgets/<dataset>_minilm_<K>pc.json (distillation wall-clock and peak memory
# included). `python scripts/make_tables.py` turns them into docs/results.md's budget table.
# Usage: bash scripts/budgets.sh DATASET K [extra --config overrides...]
#        DISTILLED_BY=results/recipes/x.json RUN=runs/recipes/x bash scripts/budgets.sh DATASET K
#          (evaluate an already distilled run RUN/distill, taking its timing from the earlier result file)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=$1; k=$2; shift 2
config=configs/$dataset.py; [ "$dataset" = ag_news ] && config=configs/agnews.py
run=${RUN:-runs/budgets/${dataset}_minilm_${k}pc}
extra=(); [ -n "${DISTILLED_BY:-}" ] && extra=(--distilled-by "$DISTILLED_BY")
python scripts/distill_eval.py --out "results/budgets/${dataset}_minilm_${k}pc.json" --run "$run" --seeds 10 \
  "${extra[@]}" -- "--config=$config" "--config.synthetic.n_per_class=$k" "$@"
