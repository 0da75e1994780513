"""Regenerates the figures of docs/diagnosis.md from the result files in results/.

Like the tables (`scripts/make_tables.py`), every figure is drawn from result
files alone, so it can be redrawn by anyone with the repository:

  python scripts/make_plots.py [--out docs/figures]

- `ceiling.png`: accuracy after T inner steps on real minibatches vs T, per
  inner optimizer (results/diagnosis/ceiling_*.json);
- `gradients.png`: meta-gradient agreement across θ0 samples per θ0
  distribution (results/diagnosis/gradients_*.json);
- `meta_loss.png`: meta-loss and periodic eval accuracy vs outer step of the
  remedy runs that logged them (results/remedies/*.json, `history`);
- `step_sizes.png`: the learned inner step sizes of every remedy run.
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tables import ROOT, describe_init, load  # noqa: E402

OPTIMIZERS = {"sgd": "momentum SGD", "adam": "Adam"}


def _save(fig, out: str, name: str) -> str:
  fig.tight_layout()
  path = os.path.join(out, name)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def ceiling(out: str) -> str | None:
  runs = load("diagnosis/ceiling_*.json")
  if not runs:
    return None
  series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
  for r in runs.values():
    model = describe_init(r)
    for row in r["rows"]:
      series.setdefault((f"{r['dataset']}, {model}", OPTIMIZERS[row["optimizer"]]), []).append(
          (row["steps"], 100 * row["mean"], 100 * row["std"]))
  fig, ax = plt.subplots(figsize=(6, 4))
  for (what, opt), pts in sorted(series.items()):
    t, m, s = map(np.array, zip(*sorted(pts)))
    ax.errorbar(t, m, yerr=s, marker="o", capsize=3, label=f"{opt} ({what})")
  ax.set_xscale("log"), ax.set_xlabel("inner steps T on real minibatches of 64")
  ax.set_ylabel("validation accuracy (%)"), ax.legend(fontsize=8), ax.grid(alpha=0.3)
  return _save(fig, out, "ceiling.png")


def gradients(out: str) -> str | None:
  runs = load("diagnosis/gradients_*.json")
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
  return _save(fig, out, "gradients.png")


def meta_loss(out: str) -> str | None:
  runs = {n: r for n, r in load("remedies/*.json").items() if r.get("history")}
  if not runs:
    return None
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
  for name, r in runs.items():
    h = [x for x in r["history"] if "meta_loss" in x]
    ax[0].plot([x["step"] for x in h], [x["meta_loss"] for x in h], label=name)
    ev = [x for x in r["history"] if "eval_accuracy" in x]
    ax[1].plot([x["step"] for x in ev], [100 * x["eval_accuracy"] for x in ev], "o-", label=name)
  ax[0].set_xlabel("outer step"), ax[0].set_ylabel("meta-loss (real minibatch)")
  ax[1].set_xlabel("outer step"), ax[1].set_ylabel("eval accuracy during distillation (%)")
  for a in ax:
    a.legend(fontsize=8), a.grid(alpha=0.3)
  return _save(fig, out, "meta_loss.png")


def step_sizes(out: str) -> str | None:
  runs = {n: r for n, r in load("remedies/*.json").items() if r.get("step_sizes")}
  if not runs:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, r in runs.items():
    lrs = np.asarray(r["step_sizes"], dtype=float)
    lrs = lrs.mean(axis=1) if lrs.ndim == 2 else lrs  # per-group step sizes: their mean per step
    ax.plot(np.arange(1, len(lrs) + 1), lrs, marker=".", label=name)
  ax.set_xlabel("inner step t"), ax.set_ylabel("learned step size"), ax.set_yscale("log")
  ax.legend(fontsize=8), ax.grid(alpha=0.3)
  return _save(fig, out, "step_sizes.png")


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "figures"))
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for path in filter(None, (f(args.out) for f in (ceiling, gradients, meta_loss, step_sizes))):
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
