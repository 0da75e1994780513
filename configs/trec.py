"""TREC (6 coarse classes, imbalanced): the recommended recipe. `:tiny` for BERT-Tiny from random init.

No validation split: it reports on test; step sizes are tuned on held-out training rows
(configs/recipes.py).
"""

from configs import recipes


def get_config(variant: str = "minilm"):
  return recipes.get("trec", variant)
