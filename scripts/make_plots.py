"""Regenerates the figures of docs/diagnosis.md from the result files in results/.

Like the tables (`scripts/make_tables.py`), every figure is drawn from result
files alone, so it can be redrawn by anyone with the repository; accuracy
axes also show chance and, where the evaluation split's data files are there
to count its labels, the majority-class rate:

  python scripts/make_plots.py [--out docs/figures]

- `ceiling.png`: accuracy after T inner steps on real minibatches vs T, per
  inner optimizer (results/diagnosis/ceiling_*.json);
- `gradients.png`: meta-gradient agreement across θ0 samples per θ0
  distribution (results/diagnosis/gradients_*.json);
- `meta_loss.png`: meta-loss and periodic eval accuracy vs outer step of the
  remedy runs that logged them, one row per dataset (results/remedies/*.json,
  `history`);
- `step_sizes.png`: the learned inner step sizes of every remedy run.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Optional

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tables import NAMES, ROOT, describe_init, load  # noqa: E402

sys.path.insert(0, ROOT)
from distill_jax import data  # noqa: E402
from distill_jax.errors import UserError  # noqa: E402
from distill_jax.plots import add_baselines, integer_ticks, progress_accuracy  # noqa: E402

OPTIMIZERS = {"sgd": "momentum SGD", "adam": "Adam"}


def _save(fig, out: str, name: str) -> str:
  fig.tight_layout()
  path = os.path.join(out, name)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


@functools.lru_cache(maxsize=None)
def eval_labels(dataset: str, split: str) -> Optional[np.ndarray]:
  """The split's labels from the local data files, or None where they are absent (the majority line is then
  left out: result files do not record label counts)."""
  try:
    return data.load_texts(dataset, split)[1]
  except UserError:
    return None


def short_name(dataset: str) -> str:
  return NAMES.get(dataset, dataset).split(" (")[0]


def baselines(ax, runs: list[dict]) -> None:
  """Chance and majority-class lines (percent) for each dataset and evaluation split among `runs`."""
  for dataset, split in sorted({(r["dataset"], r.get("eval_split") or data.get_spec(r["dataset"]).eval_split)
                                for r in runs}):
    add_baselines(ax, data.get_spec(dataset).num_classes, eval_labels(dataset, split), scale=100,
                  dataset=short_name(dataset), split=split)


def ceiling(runs: dict[str, dict]) -> plt.Figure | None:
  if not runs:
    return None
  series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
  for r in runs.values():
    model = describe_init(r)
    for row in r["rows"]:
      series.setdefault((f"{r['dataset']}, {model}", OPTIMIZERS[row["optimizer"]]), []).append(
          (row["steps"], 100 * row["mean"], 100 * row["std"]))
  fig, ax = plt.subplots(figsize=(11, 4))
  for (what, opt), pts in sorted(series.items()):
    t, m, s = map(np.array, zip(*sorted(pts)))
    ax.errorbar(t, m, yerr=s, marker="o", capsize=3, label=f"{opt} ({what})")
  baselines(ax, list(runs.values()))
  steps = sorted({row["steps"] for r in runs.values() for row in r["rows"]})
  ax.set_xscale("log"), ax.set_xticks(steps, [str(t) for t in steps]), ax.minorticks_off()  # the measured T
  ax.set_xlabel("inner steps T on real minibatches of 64")
  ax.set_ylabel("validation accuracy (%)"), ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, not over them
  return fig


def gradients(runs: dict[str, dict]) -> plt.Figure | None:
  if not runs:
    return None
  labels, cos, cos_std, norm = [], [], [], []
  for name, r in runs.items():
    for variant, v in r.items():
      if isinstance(v, dict):
        labels.append(f"{variant}\n({name.split('_', 1)[1]})")
        cos.append(v["cosine_mean"]), cos_std.append(v["cosine_std"]), norm.append(v["norm_mean"])
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
  y = np.arange(len(labels))
  ax[0].barh(y, cos, xerr=cos_std, capsize=3), ax[0].set_xlabel("mean pairwise cosine of meta-gradients")
  ax[1].barh(y, norm), ax[1].set_xlabel("‖meta-gradient‖ per θ0 sample")
  for a in ax:
    a.set_yticks(y, labels if a is ax[0] else [""] * len(y), fontsize=8)
  return fig


def meta_loss(runs: dict[str, dict]) -> plt.Figure | None:
  """One row per dataset, so each eval-accuracy panel has its own chance and majority lines."""
  runs = {n: r for n, r in runs.items() if r.get("history")}
  if not runs:
    return None
  datasets = sorted({r["dataset"] for r in runs.values()})
  fig, axes = plt.subplots(len(datasets), 2, figsize=(13, 3.4 * len(datasets)), squeeze=False)
  for dataset, (loss_ax, acc_ax) in zip(datasets, axes):
    mine = {n: r for n, r in runs.items() if r["dataset"] == dataset}
    for name, r in mine.items():
      h = [x for x in r["history"] if "meta_loss" in x]
      loss_ax.plot([x["step"] for x in h], [x["meta_loss"] for x in h], label=name)
      ev = [(x["step"], 100 * progress_accuracy(x)) for x in r["history"]
            if progress_accuracy(x) is not None]
      if ev:
        acc_ax.plot(*zip(*ev), "o-", label=name)
    baselines(acc_ax, list(mine.values()))
    loss_ax.set_title(NAMES.get(dataset, dataset), fontsize=10)
    loss_ax.set_xlabel("outer step"), loss_ax.set_ylabel("meta-loss (real minibatch)")
    acc_ax.set_xlabel("outer step"), acc_ax.set_ylabel("accuracy during distillation (%)\nheld-out rows (older runs: eval split)")
    acc_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # runs and baselines of both panels
    for a in (loss_ax, acc_ax):
      a.grid(alpha=0.3), integer_ticks(a.xaxis)
  return fig


def step_sizes(runs: dict[str, dict]) -> plt.Figure | None:
  runs = {n: r for n, r in runs.items() if r.get("step_sizes")}
  if not runs:
    return None
  fig, ax = plt.subplots(figsize=(13, 5))
  for name, r in runs.items():
    lrs = np.asarray(r["step_sizes"], dtype=float)
    lrs = lrs.mean(axis=1) if lrs.ndim == 2 else lrs  # per-group step sizes: their mean per step
    ax.plot(np.arange(1, len(lrs) + 1), lrs, marker=".", label=name)
  ax.set_xlabel("inner step t"), ax.set_ylabel("learned step size"), ax.set_yscale("log")
  integer_ticks(ax.xaxis)
  ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1)), ax.grid(alpha=0.3)  # one per run
  return fig


# file name: (figure, the result files it is drawn from)
FIGURES = {"ceiling.png": (ceiling, "diagnosis/ceiling_*.json"),
           "gradients.png": (gradients, "diagnosis/gradients_*.json"),
           "meta_loss.png": (meta_loss, "remedies/*.json"),
           "step_sizes.png": (step_sizes, "remedies/*.json")}


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "figures"))
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for name, (draw, pattern) in FIGURES.items():
    fig = draw(load(pattern))
    if fig is not None:
      print(_save(fig, args.out, name))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
