#!/usr/bin/env bash
# Direct (Wang et al.) vs addressable memories (Deng & Russakovsky) at an equal
# storage budget with BERT-Tiny: the direct set is 10 examples per class
# (10·C·L·H floats); the addressable set presents 20 per class from K = 10·C − 1
# shared memories (K·L·H + M·K + K·C floats ≤ the direct budget; configs/addressable.py).
# Both: T=10 momentum SGD with learned step sizes, synthetic init from real
# examples, 150 outer steps, 5 evaluation seeds; IMDB at max_len 128 and
# evaluated on 2,000 random test rows (CPU budget). SETTING picks the θ0
# distribution: `fixed` (one known θ0 for distillation and evaluation, the
# control of docs/diagnosis.md) or `random` (the paper's fresh θ0 per outer step).
# Writes results/addressable/<setting>_<dataset>_<kind>.json.
# Usage: SETTING=fixed [RESUME=1] bash scripts/addressable.sh [dataset ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SETTING=${SETTING:-fixed}
RUNS=${RUNS:-runs/addressable}
COMMON="--config.init.kind=$SETTING --config.inner_steps=10 --config.outer.steps=150 --config.evaluate.baselines=False --config.evaluate.decode=False"
declare -A CFG=([sst2]=configs/paper.py:sst2 [rotten_tomatoes]=configs/paper.py:rotten_tomatoes
                [imdb]=configs/paper.py:imdb [ag_news]=configs/paper.py:ag_news)
declare -A EXTRA=([imdb]="--config.max_len=128 --config.eval_limit=2000")
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(sst2 rotten_tomatoes ag_news imdb)
for d in "${names[@]}"; do
  for kind in direct addressable; do
    if [ $kind = direct ]; then cfg="--config=${CFG[$d]} --config.n_per_class=10"; else cfg="--config=configs/addressable.py:$d"; fi
    echo "== $SETTING $d $kind"
    python scripts/distill_eval.py ${RESUME:+--resume} --out "results/addressable/${SETTING}_${d}_${kind}.json" \
      --run "$RUNS/${SETTING}_${d}_${kind}" -- $cfg $COMMON ${EXTRA[$d]:-}
  done
done
