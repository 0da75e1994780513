#!/usr/bin/env bash
# Full-data training, the paper's Table 1: BERT-Tiny from random init on the paper's four
# datasets and TREC (AG News: train = test[:6000], eval = test[6000:]; TREC: train, eval on test)
# and pretrained MiniLM-L6 on the same five. CPU budget: IMDB max_len 128; MiniLM one epoch, on SST-2 over 8,000
# random training rows, on IMDB over 4,000 (train_limit) evaluated on 2,000 random test rows (eval_limit). Each run writes results/table1/<name>.json;
# `python scripts/make_tables.py` turns them into the table in docs/results.md.
# Usage: bash scripts/table1.sh [name ...]   (default: all runs)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/table1}
mkdir -p results/table1

TINY="--config.mode=train --config.train.learning_rate=1e-3 --config.train.warmup_steps=200 --config.train.patience=3"
declare -A ARGS=(
  [tiny_sst2]="--config=configs/paper.py:sst2 $TINY --config.train.epochs=3"
  [tiny_rotten_tomatoes]="--config=configs/paper.py:rotten_tomatoes $TINY --config.train.epochs=10"
  [tiny_imdb]="--config=configs/paper.py:imdb --config.max_len=128 $TINY --config.train.epochs=2"
  [tiny_ag_news]="--config=configs/paper.py:ag_news $TINY --config.train.epochs=10"
  [minilm_sst2]="--config=configs/minilm.py --config.dataset=sst2 --config.mode=train --config.train.epochs=1 --config.train_limit=8000"
  [minilm_rotten_tomatoes]="--config=configs/minilm.py --config.dataset=rotten_tomatoes --config.mode=train --config.train.epochs=1"
  [minilm_ag_news]="--config=configs/minilm.py --config.dataset=ag_news --config.mode=train --config.train.epochs=1"
  [tiny_trec]="--config=configs/paper.py:trec $TINY --config.train.epochs=10"
  [minilm_trec]="--config=configs/minilm.py --config.data.dataset=trec --config.mode=train --config.train.epochs=1"
  [minilm_imdb]="--config=configs/minilm.py --config.dataset=imdb --config.max_len=128 --config.eval_limit=2000 --config.mode=train --config.train.epochs=1 --config.train_limit=4000"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(tiny_rotten_tomatoes tiny_ag_news tiny_sst2 tiny_imdb tiny_trec minilm_rotten_tomatoes minilm_sst2 minilm_ag_news minilm_imdb minilm_trec)
for name in "${names[@]}"; do
  echo "== $name: python -m distill_jax.main ${ARGS[$name]} --workdir=$RUNS/$name"
  rm -rf "$RUNS/$name"
  python -m distill_jax.main ${ARGS[$name]} --workdir="$RUNS/$name"
  python - "$RUNS/$name/result_train.json" "results/table1/$name.json" "${ARGS[$name]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["command"] = "python -m distill_jax.main " + sys.argv[3]
json.dump(r, open(sys.argv[2], "w"), indent=2, sort_keys=True)
PY
done
