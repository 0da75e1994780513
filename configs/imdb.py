"""imdb: BERT-Tiny, the paper's setting (random θ0 per outer step, hard labels, momentum SGD)."""

from configs import default


def get_config():
  c = default.get_config()
  c.data.dataset = "imdb"
  c.data.max_len = 256
  return c
