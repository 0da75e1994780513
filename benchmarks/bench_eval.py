"""Seconds to score a split, with batches cut to their rows' length or kept at max_len.

Why: evaluating a distilled set trains ~150 models and scores each on the eval
split or the held-out rows (docs/results.md's budget table). The models of the
distilled set, its initial set and the small real subsets learn from a few
rows, so scoring is most of their cost, and most of each padded row is
padding. `modeling.accuracy` sorts rows by length and cuts each batch to its
longest row rounded up to 16 tokens (`data.length_batches`); this times both
ways on the real splits with the MiniLM-L6 recipes' model and checks that they
agree. (The equal-storage and real-data-ceiling baselines train on minibatches
of 256 and 64 real rows at full length, which the cut does not touch: in the
SST-2 1/class evaluation the equal-storage one alone took 20 of its 38 minutes.)

  python benchmarks/bench_eval.py --out benchmarks/results/eval.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_outer import cpu_isa, cpu_model, git_commit, table  # noqa: E402
from configs import agnews, rotten_tomatoes, sst2, trec  # noqa: E402
from distill_jax import experiment, modeling, runtime  # noqa: E402

CONFIGS = {"sst2": sst2, "rotten_tomatoes": rotten_tomatoes, "ag_news": agnews, "trec": trec}


def seconds(fn, repeats: int) -> tuple[float, float]:
  """Median seconds of `repeats` calls after one that compiles every shape it needs, and the value."""
  value, times = fn(), []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), value


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--datasets", default="sst2,rotten_tomatoes,ag_news,trec")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  runtime.configure()
  started, load = datetime.datetime.now(datetime.timezone.utc), os.getloadavg()
  rows = []
  for name in args.datasets.split(","):
    exp = experiment.setup(CONFIGS[name].get_config())
    params = exp.init_fn(jax.random.PRNGKey(0))
    max_len = exp.eval.input_ids.shape[1]
    for which, split in (("eval split", exp.eval), ("held-out training rows", exp.holdout)):
      score = {m: (lambda m=m: modeling.accuracy(exp.model, params, split, exp.cfg.evaluate.batch_size, m))
               for m in (max_len, 16)}
      (full, acc_full), (cut, acc_cut) = seconds(score[max_len], args.repeats), seconds(score[16], args.repeats)
      same = acc_full == acc_cut
      rows.append([name, which, f"{len(split):,}", f"{split.attention_mask.sum(1).mean():.1f} / {max_len}",
                   f"{full:.2f}", f"{cut:.2f}", f"{full / cut:.2f}×", "yes" if same else "NO"])
      print(" | ".join(rows[-1]), flush=True)
  lines = [
      "# Scoring a split: length-cut batches vs max_len batches",
      "",
      f"Command: `{shlex.join(['python'] + sys.argv)}`",
      f"Date: {started.isoformat(timespec='seconds')}; code: git {git_commit()}",
      f"CPU: {cpu_model()} × {os.cpu_count()} logical cores ({cpu_isa()}); load average at start "
      f"{' '.join(f'{v:.2f}' for v in load)}",
      "Model: each dataset's MiniLM-L6 recipe (`configs/<dataset>.py`), θ0 with a fresh head; "
      "`modeling.accuracy` with `length_multiple=max_len` (every batch at full length) and 16 (the default); "
      f"seconds: median of {args.repeats} after a call that compiles every shape; 'same' compares the two accuracies.",
      "",
      table(["dataset", "rows scored", "rows", "mean tokens / max_len", "full length, s", "length-cut, s",
              "speed-up", "same accuracy"], rows),
  ]
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
