"""Rotten Tomatoes: the recommended recipe. `:tiny` for BERT-Tiny from random init (configs/recipes.py)."""

from configs import recipes


def get_config(variant: str = "minilm"):
  return recipes.get("rotten_tomatoes", variant)
