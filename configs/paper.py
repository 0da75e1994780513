"""The course paper's setting, which does not converge: `--config=configs/paper.py:DATASET`.

BERT-Tiny from a fresh random θ0 every outer step, ten direct embedding
examples per class with hard labels, ten steps of momentum SGD with learned
step sizes (Algorithm 1). Kept to reproduce the failure (docs/diagnosis.md);
the dataset configs give the recipes that work.
"""

from configs import default

# Sequence lengths of the paper's runs (IMDB reviews are long).
MAX_LEN = {"sst2": 64, "rotten_tomatoes": 64, "imdb": 256, "ag_news": 64, "trec": 64}


def get_config(dataset: str = "sst2"):
  dataset = {"agnews": "ag_news"}.get(dataset, dataset)
  c = default.get_config()
  c.data.dataset = dataset
  c.data.max_len = MAX_LEN.get(dataset, 64)
  return c
