"""ag_news (train = test[:6000], eval = test[6000:]; its train split is unavailable here): BERT-Tiny, the paper's setting (random θ0 per outer step, hard labels, momentum SGD)."""

from configs import default


def get_config():
  c = default.get_config()
  c.data.dataset = "ag_news"
  c.data.max_len = 64
  return c
