"""sst2: BERT-Tiny, the paper's setting (random θ0 per outer step, hard labels, momentum SGD)."""

from configs import default


def get_config():
  c = default.get_config()
  c.data.dataset = "sst2"
  c.data.max_len = 64
  return c
