#!/usr/bin/env bash
# Sensitivity of the MiniLM SST-2 remedy (configs/remedies.py:minilm) to one setting at a time, at a short,
# equal budget: 50 outer steps, then the distilled set alone on 5 fresh heads (no baselines, no decoding).
# Writes results/sensitivity/<variant>.json; `python scripts/make_tables.py` puts them in docs/diagnosis.md.
# Usage: bash scripts/sensitivity.sh [VARIANT ...]   (default: every variant below, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A VARIANTS=(
  [base]=""
  [lr_log]="--config.inner.lr_param=log"
  [lr_per_layer]="--config.inner.lr_groups=layer"
  [outer_lr_3e-4]="--config.outer.lr=3e-4"
  [outer_lr_3e-3]="--config.outer.lr=3e-3"
  [hard_labels]="--config.synthetic.label_mode=hard"
  [real_labels]="--config.synthetic.label_mode=real"
  [T10]="--config.inner_steps=10"
  [T10_ratbptt5]="--config.inner_steps=10 --config.inner.backprop_steps=5 --config.inner.random_window=True"
  [no_clip]="--config.outer.clip=0"
)
ORDER=(base lr_log lr_per_layer outer_lr_3e-4 outer_lr_3e-3 hard_labels real_labels T10 T10_ratbptt5 no_clip)
RUNS=${RUNS:-runs/sensitivity}
chosen=("$@"); [[ ${#chosen[@]} -gt 0 ]] || chosen=("${ORDER[@]}")
for v in "${chosen[@]}"; do
  [[ -v VARIANTS[$v] ]] || { echo "unknown variant $v; use one of: ${ORDER[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086  # the overrides are separate words
  python scripts/distill_eval.py --out "results/sensitivity/$v.json" --run "$RUNS/$v" \
    --eval-arg=--config.evaluate.baselines=False --eval-arg=--config.evaluate.decode=False \
    --eval-arg=--config.evaluate.ceiling_batch_size=0 -- \
    --config=configs/remedies.py:minilm --config.dataset=sst2 --config.outer.steps=50 \
    --config.outer.eval_every=0 --config.outer.checkpoint_every=50 ${VARIANTS[$v]}
done
