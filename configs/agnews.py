"""AG News: the recommended recipe. `:tiny` for BERT-Tiny from random init (configs/recipes.py).

Its train split is not available here: it trains on test[:6000] and evaluates on
the disjoint test[6000:] (1,600 rows), so its numbers are not comparable with
papers that use the official split.
"""

from configs import recipes


def get_config(variant: str = "minilm"):
  return recipes.get("ag_news", variant)
