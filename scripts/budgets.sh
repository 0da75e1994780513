#!/usr/bin/env bash
# The field's protocol (issue 23): MiniLM-L6 recipe at K examples per class, evaluated on 10 fresh θ0 next to
# Random / K-Center / Herding real subsets of the same size, a random real subset of the same bytes and the
# real-data ceiling; writes results/budgets/<dataset>_minilm_<K>pc.json (distillation wall-clock and peak memory
# included). `python scripts/make_tables.py` turns them into docs/results.md's budget table.
# Resumable: a finished result is kept, a stopped distillation continues from its last checkpoint and a
# stopped evaluation from its finished parts (their attempts' wall-clock summed), so a queue of budgets can
# span sessions:
#   for job in "rotten_tomatoes 5" "sst2 5"; do bash scripts/budgets.sh $job || break; done
# Usage: bash scripts/budgets.sh DATASET K [extra --config overrides...]
#        DISTILLED_BY=results/recipes/x.json RUN=runs/recipes/x bash scripts/budgets.sh DATASET K
#          (evaluate an already distilled run RUN/distill, taking its timing from the earlier result file)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=$1; k=$2; shift 2
out=results/budgets/${dataset}_minilm_${k}pc.json
if [ -e "$out" ] && [ -z "${FORCE:-}" ]; then echo "== $out exists (FORCE=1 redoes it)"; exit 0; fi
config=configs/$dataset.py; [ "$dataset" = ag_news ] && config=configs/agnews.py
run=${RUN:-runs/budgets/${dataset}_minilm_${k}pc}
extra=(--resume); [ -n "${DISTILLED_BY:-}" ] && extra=(--distilled-by "$DISTILLED_BY")
budget=()
# Beyond 1 per class (the recipes' own outer steps): 100 outer steps, checked on held-out rows every 25.
[ "$k" -gt 1 ] && budget=(--config.outer.steps=100 --config.outer.eval_every=25)
# Rotten Tomatoes reports its test split (nothing is chosen on it or on validation: data.holdout_rows).
[ "$dataset" = rotten_tomatoes ] && budget+=(--config.data.eval_split=test)
# The real-data ceiling depends on the dataset and recipe, not on K: measured once, kept in results/ceilings/.
python scripts/distill_eval.py --out "$out" --run "$run" --seeds 10 "${extra[@]}" \
  --eval-arg=--config.evaluate.ceiling_cache=results/ceilings -- "--config=$config" \
  "--config.synthetic.n_per_class=$k" "${budget[@]}" "$@"
