"""IMDB (max_len 128, 2,000 random test reviews): the recommended recipe.

`:tiny` for BERT-Tiny from random init (configs/recipes.py).
"""

from configs import recipes


def get_config(variant: str = "minilm"):
  return recipes.get("imdb", variant)
