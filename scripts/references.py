"""Full-data references, done properly: a learning-rate grid, early stopping and the epoch chosen on
held-out training rows, the chosen model evaluated once on the evaluation split.

  python scripts/references.py minilm sst2 rotten_tomatoes     # writes results/references/minilm_<dataset>.json
  python scripts/references.py tiny all --parallel 3 --deadline-s 900
  python scripts/references.py minilm rotten_tomatoes --eval-split=test   # → minilm_rotten_tomatoes_test.json

Each grid point is one `python -m distill_jax.main --config.mode=train` run in runs/references/<model>_<dataset>/
lr<lr>; a finished run (its result_train.json exists) is not run again, and a stopped one (Ctrl-C, --deadline-s,
a crash) continues from its saved training state, so the script resumes after a stop.
The learning rate is picked by held-out accuracy alone; only the picked run's eval accuracy is reported.
Each run records where it ran (host.txt: CPU, and the GPU if any), since grid runs may come from different machines.
Runs go `--parallel` at a time (on a GPU: several small models share it; set XLA_PYTHON_CLIENT_PREALLOCATE=false).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import recipes  # pylint: disable=g-import-not-at-top
from scripts.distill_eval import host  # pylint: disable=g-import-not-at-top

DATASETS = ("sst2", "rotten_tomatoes", "imdb", "ag_news", "trec")
# model → (config, learning-rate grid, other overrides). MiniLM: the usual fine-tuning grid, 3 epochs;
# BERT-Tiny from random init learns for longer and at larger rates (the paper's Table 1 setting).
MODELS = {
    "minilm": ("configs/minilm.py", (2e-5, 5e-5, 1e-4),
               ("--config.train.epochs=3", "--config.train.patience=1", "--config.train.warmup_steps=100")),
    "tiny": ("configs/paper.py:{dataset}", (3e-4, 1e-3, 3e-3),
             ("--config.train.epochs=10", "--config.train.patience=2", "--config.train.warmup_steps=200")),
}


def split_suffix(split: str) -> str:
  """How a reference on a split other than the default is named: "test[6000:]" → "_test_6000"."""
  return "_" + re.sub(r"[^A-Za-z0-9]+", "_", split).strip("_") if split else ""


def command(model: str, dataset: str, lr: float, workdir: str, extra: list[str]) -> list[str]:
  config, _, overrides = MODELS[model]
  # The recipes' max_len; evaluation on the whole eval split (no eval_limit), including IMDB's 25,000 reviews.
  return [sys.executable, "-m", "distill_jax.main", f"--config={config.format(dataset=dataset)}",
          f"--config.data.dataset={dataset}", f"--config.data.max_len={recipes.MAX_LEN.get(dataset, 64)}",
          "--config.mode=train", f"--config.train.learning_rate={lr:g}", *overrides, *extra, f"--workdir={workdir}"]


def accelerator() -> str:
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=30)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
  except (OSError, subprocess.SubprocessError):
    return ""


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("model", choices=sorted(MODELS))
  p.add_argument("datasets", nargs="+", help=f"any of {', '.join(DATASETS)}, or all")
  p.add_argument("--parallel", type=int, default=1, help="grid runs at a time")
  p.add_argument("--deadline-s", type=float, default=0, help="stop runs still going after this many seconds")
  p.add_argument("--runs", default="runs/references")
  p.add_argument("--out", default="results/references")
  p.add_argument("--extra", action="append", default=[], help="another --config override for every run")
  p.add_argument("--lrs", default="", help="comma-separated learning rates instead of the model's grid")
  p.add_argument("--note", default="", help="why the grid or budget differs, recorded in the result")
  p.add_argument("--eval-split", default="",
                 help="evaluate on this split instead of the dataset's default (runs and result are named for it)")
  args = p.parse_args(argv)
  extra = [*args.extra, *([f"--config.data.eval_split={args.eval_split}"] if args.eval_split else [])]
  suffix = split_suffix(args.eval_split)
  datasets = DATASETS if args.datasets == ["all"] else args.datasets
  unknown = sorted(set(datasets) - set(DATASETS))
  if unknown:
    p.error(f"unknown dataset {', '.join(unknown)}; choose from {', '.join(DATASETS)} or all")
  start = time.perf_counter()
  where = host() + (f"; {accelerator()}" if accelerator() else "")
  grid = tuple(float(x) for x in args.lrs.split(",")) if args.lrs else MODELS[args.model][1]
  jobs = [(d, lr, os.path.join(args.runs, f"{args.model}_{d}{suffix}", f"lr{lr:g}")) for d in datasets for lr in grid]
  todo = [j for j in jobs if not os.path.exists(os.path.join(ROOT, j[2], "result_train.json"))]
  running: list[tuple[subprocess.Popen, tuple]] = []
  failed = []
  while todo or running:
    while todo and len(running) < args.parallel:
      job = todo.pop(0)
      os.makedirs(os.path.join(ROOT, job[2]), exist_ok=True)  # an unfinished run resumes from its train_state/
      cmd = command(args.model, job[0], job[1], job[2], extra)
      print("==", shlex.join(["python", *cmd[1:]]), flush=True)
      log = open(os.path.join(ROOT, job[2], "log.txt"), "a")
      running.append((subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), job))
    time.sleep(1)
    for proc, job in list(running):
      late = args.deadline_s and time.perf_counter() - start > args.deadline_s
      if proc.poll() is None and not late:
        continue
      if proc.poll() is None:
        proc.terminate()
        proc.wait()
      running.remove((proc, job))
      if proc.returncode:
        failed.append(job)
        print(f"== failed ({proc.returncode}): {job[2]}/log.txt", flush=True)
      else:
        with open(os.path.join(ROOT, job[2], "host.txt"), "w") as f:
          f.write(where)
  os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
  for d in datasets:
    runs = {lr: os.path.join(ROOT, w, "result_train.json") for dd, lr, w in jobs if dd == d}
    done = {lr: json.load(open(path)) for lr, path in runs.items() if os.path.exists(path)}
    if len(done) < len(runs):
      print(f"== {args.model} {d}: {len(done)} of {len(runs)} grid runs finished; no result written", flush=True)
      continue
    lr = max(done, key=lambda k: done[k]["best_holdout_accuracy"])
    best = done[lr]
    result = dict(model=args.model, dataset=d, eval_split=best.get("eval_split", args.eval_split or "default"),
                  learning_rate=lr, eval_accuracy=best["eval_accuracy"],
                  best_epoch=best["best_epoch"], holdout_accuracy=best["best_holdout_accuracy"],
                  holdout_by_lr={f"{k:g}": dict(best=r["best_holdout_accuracy"], per_epoch=r["holdout_accuracy_per_epoch"])
                                 for k, r in sorted(done.items())},
                  train_rows=best["train_rows"], holdout_rows=best["holdout_rows"], eval_rows=best["eval_rows"],
                  max_len=recipes.MAX_LEN.get(d, 64), steps=best["steps"],
                  command=shlex.join(["python", *command(args.model, d, lr, "WORKDIR", extra)[1:]]),
                  grid_command=shlex.join(["python", "scripts/references.py", args.model, d,
                                           *[f"--extra={e}" for e in args.extra],
                                           *([f"--lrs={args.lrs}"] if args.lrs else []),
                                           *([f"--eval-split={args.eval_split}"] if args.eval_split else [])]),
                  git_commit=os.environ.get("GIT_COMMIT") or subprocess.run(
                      ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    hosts = sorted({open(os.path.join(os.path.dirname(p), "host.txt")).read().strip()
                    if os.path.exists(os.path.join(os.path.dirname(p), "host.txt")) else "unrecorded"
                    for p in runs.values()})
    result.update(hosts=hosts, note=args.note)
    path = os.path.join(ROOT, args.out, f"{args.model}_{d}{suffix}.json")
    json.dump(result, open(path, "w"), indent=2, sort_keys=True)
    print(f"== {args.model} {d}: lr {lr:g} (held-out {100 * best['best_holdout_accuracy']:.2f}%), "
          f"eval {100 * best['eval_accuracy']:.2f}% → {os.path.relpath(path, ROOT)}", flush=True)
  print(f"== {time.perf_counter() - start:.0f} s", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
