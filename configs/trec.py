"""TREC (6 coarse classes; no validation split, so it reports on test): the recommended recipe. `:tiny` for BERT-Tiny from random init (configs/recipes.py)."""

from configs import recipes


def get_config(variant: str = "minilm"):
  return recipes.get("trec", variant)
