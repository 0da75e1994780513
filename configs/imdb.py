"""imdb: BERT-Tiny, the paper's setting (random θ0 per outer step, hard labels, momentum SGD)."""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = "imdb"
  c.max_len = 256
  return c
