"""Plots and decoded text from a real (tiny) distillation workdir; what the figures' axes show."""

import json
import os
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from distill_jax import main, metrics, plots
from conftest import REPO, tiny_cli_config

sys.path.insert(0, os.path.join(REPO, "scripts"))
import make_plots  # noqa: E402


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


@pytest.fixture
def figures():
  made = []
  yield made.append
  for fig in made:
    plt.close(fig)


def _hlines(ax, label: str = "") -> list[float]:
  """y of the horizontal lines (axhline: constant y across the axes) whose legend label starts with `label`."""
  return [float(l.get_ydata()[0]) for l in ax.get_lines()
          if list(l.get_xdata()) == [0, 1] and l.get_label().startswith(label)]


def _vlines(ax) -> list[float]:
  return [float(l.get_xdata()[0]) for l in ax.get_lines() if list(l.get_ydata()) == [0, 1]]


def _legend(ax) -> list[str]:
  return [t.get_text() for t in ax.get_legend().get_texts()]


def _integer_ticks(axis) -> bool:
  axis.axes.figure.canvas.draw()
  ticks = axis.get_majorticklocs()
  return len(ticks) > 0 and np.array_equal(ticks, np.round(ticks))


def _fake_workdir(path) -> str:
  """metrics.jsonl as a distillation run writes it: one record per logged outer step, eval accuracy apart."""
  records = [dict(step=s, meta_loss=0.7, inner_loss_last=0.6, meta_acc=0.5 + 0.1 * s) for s in (1, 2, 3)]
  records.append(dict(step=3, eval_accuracy=0.6))
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_accuracy_curve_shows_chance_and_the_majority_class_on_integer_steps(tmp_path, figures):
  records = metrics.read(_fake_workdir(tmp_path))
  fig = plots.plot_curves(records, num_classes=4, eval_labels=np.array([0, 0, 0, 1, 2, 3]))
  figures(fig)
  loss, acc = fig.axes
  assert _hlines(acc, "chance") == [0.25] and _hlines(acc, "majority") == [0.5]
  assert {"chance (1/4)", "majority class of the eval split (50.0%)"} <= set(_legend(acc))
  assert _hlines(loss) == []
  assert _integer_ticks(loss.xaxis) and _integer_ticks(acc.xaxis)  # steps 1..3: no tick at 1.5


def test_accuracy_curve_without_eval_labels_shows_chance_only(tmp_path, figures):
  fig = plots.plot_curves(metrics.read(_fake_workdir(tmp_path)), num_classes=2)
  figures(fig)
  assert _hlines(fig.axes[1]) == [0.5] and _legend(fig.axes[1])[-1] == "chance (1/2)"


def test_step_size_bars_sit_on_integer_steps(figures):
  fig = plots.plot_step_sizes(np.array([0.1, 0.3, 0.2]))
  figures(fig)
  assert _integer_ticks(fig.axes[0].xaxis)


def test_similarity_map_sorts_real_rows_and_draws_class_boundaries(figures):
  sim = np.arange(20.0).reshape(4, 5)
  syn_labels = np.array([0, 0, 1, 1])  # n_per_class = 2, class by class
  real_labels = np.array([1, 0, 1, 0, 0])
  fig = plots.plot_similarity(sim, syn_labels, real_labels)
  figures(fig)
  ax = fig.axes[0]
  np.testing.assert_array_equal(ax.images[0].get_array(), sim[:, [1, 3, 4, 0, 2]])  # three of class 0, then 1
  assert _hlines(ax) == [1.5] and _vlines(ax) == [2.5]  # between the cells of the last class-0 and first class-1
  assert _integer_ticks(ax.xaxis) and _integer_ticks(ax.yaxis)


def _ceiling_run(dataset: str) -> dict:
  return dict(dataset=dataset, init=dict(kind="random", fixed_word_embeddings=False),
              model=dict(size="tiny", pretrained=""),
              rows=[dict(optimizer="sgd", steps=t, mean=m, std=0.01) for t, m in ((10, 0.5), (100, 0.6), (300, 0.7))])


def _remedy_run(dataset: str, eval_split: str) -> dict:
  history = [dict(step=s, meta_loss=1.0 / s) for s in (1, 2, 3)] + [dict(step=3, eval_accuracy=0.8)]
  return dict(dataset=dataset, eval_split=eval_split, history=history)


@pytest.fixture
def sst2_labels(monkeypatch):
  """SST-2 validation with 3 of 4 labels positive; other splits' labels unknown (no data files)."""
  monkeypatch.setattr(make_plots, "eval_labels",
                      lambda dataset, split: np.array([0, 1, 1, 1]) if (dataset, split) == ("sst2", "validation")
                      else None)


def test_ceiling_figure_has_baselines_and_the_measured_T_as_ticks(sst2_labels, figures):
  fig = make_plots.ceiling({"ceiling_sst2_tiny": _ceiling_run("sst2")})
  figures(fig)
  ax = fig.axes[0]
  assert _hlines(ax, "chance") == [50.0] and _hlines(ax, "majority") == [75.0]
  assert {"chance (1/2), SST-2", "majority class of SST-2 validation (75.0%)"} <= set(_legend(ax))
  fig.canvas.draw()
  assert list(ax.get_xticks()) == [10, 100, 300]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "100", "300"]


def test_meta_loss_figure_has_one_row_per_dataset_with_its_own_baselines(sst2_labels, figures):
  fig = make_plots.meta_loss({"a": _remedy_run("sst2", "validation"), "b": _remedy_run("ag_news", "test[6000:]"),
                              "no_history": dict(dataset="imdb")})
  figures(fig)
  (ag_loss, ag_acc), (sst_loss, sst_acc) = np.reshape(fig.axes, (2, 2))
  assert ag_loss.get_title().startswith("AG News") and sst_loss.get_title() == "SST-2"
  assert _hlines(ag_acc, "chance") == [25.0] and _hlines(ag_acc, "majority") == []  # AG News labels unknown
  assert _hlines(sst_acc, "chance") == [50.0] and _hlines(sst_acc, "majority") == [75.0]
  assert _legend(sst_acc)[0] == "a" and _legend(ag_acc)[0] == "b"
  assert all(_integer_ticks(ax.xaxis) for ax in fig.axes)


def test_majority_line_needs_the_split_files(monkeypatch, tmp_path):
  monkeypatch.setenv("DISTILL_JAX_DATA_DIR", str(tmp_path))
  assert make_plots.eval_labels.__wrapped__("sst2", "validation") is None
