"""Plots and decoded text from a real (tiny) distillation workdir."""

import numpy as np
from PIL import Image

from distill_jax import main, metrics, plots
from conftest import tiny_cli_config


def test_plots_from_a_workdir(tmp_path):
  cfg = tiny_cli_config(tmp_path, **{"outer.steps": 2})
  main.run(cfg, str(tmp_path / "run"))
  made = plots.render(str(tmp_path / "run"), real_rows=32)
  names = sorted(p.rsplit("/", 1)[1] for p in made)
  assert names == ["curves.png", "decoded.txt", "similarity.png", "step_sizes.png"]
  for p in made[:-1]:
    img = np.asarray(Image.open(p))
    assert img.shape[0] > 100 and img.std() > 0  # a real picture, not a blank canvas
  text = open(made[-1]).read()
  assert text.count("== class") == 2 and text.count("[CLS]") == 4
  records = metrics.read(str(tmp_path / "run"))
  assert [r["step"] for r in records] == [1, 2] and all("meta_loss" in r for r in records)
  assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_similarity_is_cosine_of_mean_pooled_rows():
  x = np.array([[[1.0, 0.0], [1.0, 0.0]]])
  real = np.array([[[2.0, 0.0], [9.0, 9.0]], [[0.0, 1.0], [0.0, 1.0]]])
  sim = plots.similarity(x, np.ones((1, 2)), real, np.array([[1, 0], [1, 1]]))
  np.testing.assert_allclose(sim, [[1.0, 0.0]], atol=1e-7)
