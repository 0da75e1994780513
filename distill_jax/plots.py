"""PNG plots and decoded text from a distillation workdir.

`python -m distill_jax.plots --workdir=RUN [--eval_workdir=EVAL]` writes into
`RUN/plots/`: meta-loss (and evaluation accuracy, when logged) vs outer step,
the learned step-size schedule, the cosine similarity between synthetic and
real examples, and `decoded.txt` with the nearest-token text of each synthetic
example grouped by class.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from absl import app, flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from distill_jax import checkpoint, data, decode, distill, experiment, metrics, modeling, synthetic  # noqa: E402
from distill_jax.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def integer_ticks(*axes) -> None:
  """Steps and example indices are counts: no tick at 2.5, even where the axis spans a single step."""
  for axis in axes:
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def majority_rate(labels: np.ndarray, num_classes: int) -> float:
  """Accuracy of always predicting the most frequent class."""
  return float(np.bincount(labels, minlength=num_classes).max() / len(labels))


def add_baselines(ax, num_classes: int, eval_labels: Optional[np.ndarray] = None, scale: float = 1.0,
                  dataset: str = "", split: str = "eval split") -> None:
  """Horizontal lines at chance (1/num_classes) and, when the evaluation labels are known, the majority-class
  rate: what a model that learned nothing scores (an unbalanced split puts the second above the first), so an
  accuracy curve is read against them. `scale` = 100 for percent axes; `dataset` names it where several share
  a figure."""
  ax.axhline(scale / num_classes, color="gray", linestyle=":",
             label=f"chance (1/{num_classes})" + (f", {dataset}" if dataset else ""))
  if eval_labels is not None:
    rate = majority_rate(eval_labels, num_classes)
    ax.axhline(scale * rate, color="black", linestyle="--",
               label=f"majority class of {dataset + ' ' if dataset else 'the '}{split} ({100 * rate:.1f}%)")


def progress_accuracy(record: dict) -> Optional[float]:
  """Distillation's periodic check: `holdout_accuracy`, or `eval_accuracy` in logs from before it moved off
  the eval split."""
  return record.get("holdout_accuracy", record.get("eval_accuracy"))


def plot_curves(records: list[dict], num_classes: int, eval_labels: Optional[np.ndarray] = None) -> plt.Figure:
  """Meta-loss and accuracies vs outer step (`metrics.jsonl` records), accuracies against chance and, given the
  eval split's labels, its majority class."""
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
  steps = [r["step"] for r in records if "meta_loss" in r]
  ax[0].plot(steps, [r["meta_loss"] for r in records if "meta_loss" in r], label="meta-loss (real batch)")
  ax[0].plot(steps, [r["inner_loss_last"] for r in records if "meta_loss" in r], label="inner loss at step T")
  ax[0].set_xlabel("outer step"), ax[0].set_ylabel("cross-entropy"), ax[0].legend()
  ax[1].plot(steps, [r["meta_acc"] for r in records if "meta_loss" in r], label="θT on the real batch")
  evals = [(r["step"], progress_accuracy(r)) for r in records if progress_accuracy(r) is not None]
  if evals:
    ax[1].plot(*zip(*evals), "o-", label="held-out training rows")
  add_baselines(ax[1], num_classes, eval_labels)
  ax[1].set_xlabel("outer step"), ax[1].set_ylabel("accuracy"), ax[1].legend()
  integer_ticks(ax[0].xaxis, ax[1].xaxis)
  return fig


def plot_step_sizes(lrs: np.ndarray) -> plt.Figure:
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.bar(np.arange(1, len(lrs) + 1), lrs)
  ax.set_xlabel("inner step t"), ax.set_ylabel("learned step size")
  integer_ticks(ax.xaxis)
  return fig


def _mean_pool(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  return (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)


def similarity(syn_x: np.ndarray, syn_mask: np.ndarray, real_x: np.ndarray, real_mask: np.ndarray) -> np.ndarray:
  """Cosine similarity of mean-pooled synthetic examples to mean-pooled real ones."""
  pooled_real, pooled_syn = _mean_pool(real_x, real_mask), _mean_pool(syn_x, syn_mask)
  a = pooled_syn / np.linalg.norm(pooled_syn, axis=-1, keepdims=True)
  b = pooled_real / np.linalg.norm(pooled_real, axis=-1, keepdims=True)
  return a @ b.T


def class_boundaries(labels: np.ndarray) -> np.ndarray:
  """Indices where the class changes along a class-ordered row of labels."""
  return np.flatnonzero(np.diff(labels)) + 1


def plot_similarity(sim: np.ndarray, syn_labels: np.ndarray, real_labels: np.ndarray) -> plt.Figure:
  """Synthetic (rows, ordered class by class as the set is: n_per_class of class 0, then of class 1, ...) vs real
  examples (columns, sorted by class), with lines between the classes, so each class pair's block is visible."""
  order = np.argsort(real_labels, kind="stable")
  fig, ax = plt.subplots(figsize=(8, 3.5))
  im = ax.imshow(sim[:, order], aspect="auto", cmap="viridis")
  for b in class_boundaries(np.asarray(syn_labels)):
    ax.axhline(b - 0.5, color="white", linewidth=1)
  for b in class_boundaries(np.asarray(real_labels)[order]):
    ax.axvline(b - 0.5, color="white", linewidth=1)
  ax.set_xlabel("real examples (sorted by class)"), ax.set_ylabel("synthetic examples (by class)")
  ax.set_title("cosine similarity, mean-pooled embeddings")
  integer_ticks(ax.xaxis, ax.yaxis)
  fig.colorbar(im, ax=ax)
  return fig


def render(workdir: str, data_dir: str = "", real_rows: int = 500) -> list[str]:
  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"), create=False)
  cfg = ml_collections.ConfigDict(checkpoint.restore_config(mngr))
  if data_dir:
    cfg.data.data_dir = data_dir
  exp = experiment.setup(cfg)
  syn, spec, _, template = distill.make_problem(exp)
  ckpt = checkpoint.restore_state(mngr, template)
  out = os.path.join(workdir, "plots")
  os.makedirs(out, exist_ok=True)
  curves = plot_curves(metrics.read(workdir), exp.num_classes, exp.eval.labels)
  made = [_save(curves, os.path.join(out, "curves.png"))]
  lrs = np.asarray(synthetic.step_sizes(ckpt["state"]["learned"]["lr"], spec.lr_param))
  made.append(_save(plot_step_sizes(lrs), os.path.join(out, "step_sizes.png")))
  syn_data = syn.materialize(ckpt["state"]["learned"]["data"], ckpt["static"])
  table = modeling.word_table(exp.init_fn(jax.random.PRNGKey(cfg.init.seed)))
  pick = np.random.default_rng(0).permutation(len(exp.train))[:real_rows]  # files may be sorted by label
  rows = exp.train.subset(np.sort(pick))
  real_x = np.asarray(table[jnp.asarray(rows.input_ids)])
  sim = similarity(np.asarray(decode.embeddings(syn_data, table)), np.asarray(syn_data["attention_mask"]), real_x,
                   rows.attention_mask)
  labels = np.asarray(ckpt["static"]["labels"])
  made.append(_save(plot_similarity(sim, labels, rows.labels), os.path.join(out, "similarity.png")))
  ids = decode.decode_set(syn_data, table, "cosine")
  texts = decode.texts(ids, syn_data["attention_mask"], data.get_tokenizer(cfg.data.vocab or None))
  path = os.path.join(out, "decoded.txt")
  with open(path, "w") as f:
    for c, name in enumerate(exp.spec.label_names):
      f.write(f"== class {c} ({name})\n")
      f.writelines(f"{t}\n" for t, l in zip(texts, labels) if l == c)
  return made + [path]


def main(argv) -> None:
  del argv
  if not FLAGS.workdir:
    print("error: pass --workdir=DIR of a distillation run", file=sys.stderr)
    sys.exit(2)
  try:
    for path in render(FLAGS.workdir, FLAGS.data_dir):
      print(path)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  from distill_jax import runtime
  runtime.configure()
  # Defined here, not at import, so importing this module next to `main` does not clash on --workdir.
  flags.DEFINE_string("workdir", None, "Workdir of a distillation run.")
  flags.DEFINE_string("data_dir", "", "Overrides the run's data_dir (e.g. on another machine).")
  app.run(main)
