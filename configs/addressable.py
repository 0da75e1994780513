"""Addressable memories (Deng & Russakovsky 2022): `--config=configs/addressable.py:DATASET`.

K shared memories of L×H plus an M×K addressing matrix and per-memory learned
labels. At the default sizes it stores fewer floats than the direct set of 10
examples per class (20·L·H for two classes) while presenting twice as many
examples (20 per class): K = 2·(10·C) − C − 1 memories keeps
K·L·H + M·K + K·C ≤ 10·C·L·H for max_len 64 and BERT-Tiny (H=128).
"""

from configs import paper

_CLASSES = {"sst2": 2, "rotten_tomatoes": 2, "imdb": 2, "ag_news": 4, "agnews": 4}


def get_config(dataset: str = "sst2"):
  if dataset not in _CLASSES:
    raise ValueError(f"unknown dataset {dataset!r}; use one of {sorted(_CLASSES)}")
  c = paper.get_config(dataset)
  classes = _CLASSES[dataset]
  c.synthetic.kind = "addressable"
  c.synthetic.n_per_class = 20
  c.synthetic.num_bases = 10 * classes - 1
  c.synthetic.label_mode = "soft"
  return c
