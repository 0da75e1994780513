"""Diagnosis of why bilevel distillation through BERT fails (issue: make it work).

Six measurements, each written to results/diagnosis/<name>.json:

- `ceiling`: accuracy after T steps of the inner optimizer on REAL minibatches
  of 64 from the θ0 distribution, for T in --steps, momentum SGD and Adam; step
  size tuned on held-out training rows. No synthetic set can beat this by much
  when T steps of that optimizer cannot learn the task from real data.
- `gradients`: the meta-gradient w.r.t. the synthetic set at its initial value
  for K independent θ0 samples, under several θ0 distributions: per-sample norm,
  norm of the mean, and mean pairwise cosine between samples (≈0 means each θ0
  pulls the set in an unrelated direction, so Adam on S averages noise).
- `pooling`: how much the pooler's input depends on the text at θ0, for the
  [CLS] state and the masked mean of all states: the spread across sentences
  (per-dimension std, RMS over dimensions) relative to the RMS of the vector.
  Near 0, every sentence looks alike to the classifier and its gradient
  carries little about the text.

- `coverage`: accuracy after the config's T inner steps (its optimizer) on
  real subsets of n examples per class (minibatches of 64), and on the config's
  n_per_class examples per class when each superposes k real examples of its
  class (`synthetic.superpose`; whole set per step). Step sizes tuned on
  held-out training rows. From a random init the steps learn in the word
  table, so what a training set teaches grows with how many words it covers.

- `checks`: a distillation run's kept checkpoints re-scored on the rows its
  periodic checks scored before data.holdout kept its rows in random order (the
  first outer.eval_rows held-out rows in file order: on label-sorted files
  almost one class), on the same number of random held-out rows (the checks
  since), on all held-out rows and on the eval split, each by --seeds fresh θ0
  (seed offset 3000, as the checks). It tells whether a run's recorded checks
  can choose its step.
- `lengths`: a run's kept checkpoints scored the same way on held-out
  training rows and on the eval split, each cut into buckets of token count.
  It tells whether the checks and the evaluation score the same kind of text.

Usage:
  python scripts/diagnose.py ceiling --config=configs/paper.py:sst2 --steps=10,100,300,1000
  python scripts/diagnose.py ceiling --config=configs/paper.py:sst2 --steps=1000 --tag=T1000
  python scripts/diagnose.py ceiling --config=configs/paper.py:sst2 --config.init.fixed_word_embeddings=True \
      --freeze_word_table --optimizers=adam --steps=100,300 --tag=frozen_table
  python scripts/diagnose.py gradients --config=configs/paper.py:sst2 --samples=8
  python scripts/diagnose.py pooling --config=configs/paper.py:sst2 --samples=8
  python scripts/diagnose.py coverage --config=configs/remedies.py:tiny_superpose --config.dataset=sst2 \
      --per_class=10,100,1000,0 --superpose=1,10,100,300 --seeds=5
  python scripts/diagnose.py checks --run=runs/tiny_small/rotten_tomatoes_d4/distill --seeds=10 --tag=d4
      (the run's saved config is used; --config is not needed)
  python scripts/diagnose.py lengths --run=runs/budgets/sst2_minilm_1pc_olr3e-3/distill --seeds=10 --tag=olr3e-3
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distill_jax import (checkpoint, config, data, distill, evaluate, experiment, fit, inner, runtime,  # noqa: E402
                         synthetic)
from distill_jax.models import bert  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Dataset config.", lock_config=False)
flags.DEFINE_list("steps", ["10", "100", "300", "1000"], "T values for the ceiling.")
flags.DEFINE_list("optimizers", ["sgd", "adam"], "Inner optimizers for the ceiling.")
flags.DEFINE_list("sgd_grid", ["0.01", "0.03", "0.1", "0.3"], "Step sizes tried for momentum SGD.")
flags.DEFINE_list("adam_grid", ["0.0003", "0.001", "0.003"], "Step sizes tried for Adam.")
flags.DEFINE_integer("seeds", 3, "Evaluation seeds.")
flags.DEFINE_integer("samples", 8, "θ0 samples for the gradient statistics.")
flags.DEFINE_string("out", "results/diagnosis", "Output folder.")
flags.DEFINE_bool("freeze_word_table", False, "Ceiling with the word-embedding table held at θ0, which is "
                  "all synthetic embeddings can do (they bypass it).")
flags.DEFINE_list("per_class", ["10", "100", "1000", "0"], "coverage: real examples per class (0 = all).")
flags.DEFINE_list("superpose", ["1", "10", "100", "300"], "coverage: real examples superposed per synthetic one.")
flags.DEFINE_string("run", "", "checks, lengths: a distillation workdir (its config_distill.json and checkpoints/).")
flags.DEFINE_list("checkpoint_steps", [], "checks, lengths: the kept steps to score (default: all).")
flags.DEFINE_list("length_bounds", ["8", "16", "24"], "lengths: upper bounds of the token-count buckets.")
flags.DEFINE_list("length_splits", ["holdout", "eval"], "lengths: the row sets to cut (holdout alone, to choose a "
                  "setting without looking at the split a result reports).")
flags.DEFINE_string("tag", "", "Suffix of the result file name, so extra runs (e.g. T=1000) add rows instead of replacing.")
FLAGS = flags.FLAGS


def tune_and_pool(exp) -> tuple:
  """1,000 random training rows to tune step sizes on, and the rest to train on."""
  perm = np.random.default_rng(0).permutation(len(exp.train))
  return exp.train.subset(np.sort(perm[:1000])), exp.train.subset(np.sort(perm[1000:]))


def ceiling(cfg) -> dict:
  exp = experiment.setup(cfg)
  tune, pool = tune_and_pool(exp)
  rows = []
  for opt in FLAGS.optimizers:
    grid = tuple(float(x) for x in (FLAGS.sgd_grid if opt == "sgd" else FLAGS.adam_grid))
    for t in (int(s) for s in FLAGS.steps):
      spec = fit.InnerSpec(steps=t, batch_size=64, tx=inner.direction(opt, momentum=cfg.inner.momentum),
                               lr_param="softplus", remat=False, freeze_word_embeddings=FLAGS.freeze_word_table)
      t0 = time.perf_counter()
      r = evaluate.real_ceiling(exp.model, exp.init_fn, pool, exp.num_classes, spec, tune, exp.eval, grid,
                                FLAGS.seeds)
      r.update(optimizer=opt, seconds=time.perf_counter() - t0)
      print(f"{opt} T={t}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f} (lr {r['lr']})", flush=True)
      rows.append(r)
  return dict(dataset=exp.spec.name, init=cfg.init.to_dict(), model=cfg.model.to_dict(), rows=rows,
              word_table="frozen" if FLAGS.freeze_word_table else "trained")


def coverage(cfg) -> dict:
  exp = experiment.setup(cfg)
  c = exp.num_classes
  tune, pool = tune_and_pool(exp)
  opt = cfg.inner.optimizer
  tx = inner.direction(opt, momentum=cfg.inner.momentum, eps=cfg.inner.adam_eps)
  grid = tuple(float(x) for x in (FLAGS.sgd_grid if opt == "sgd" else FLAGS.adam_grid))

  def score(arrays, batch_size):
    spec = fit.InnerSpec(steps=cfg.inner.steps, batch_size=batch_size, tx=tx, lr_param="softplus", remat=False)
    lr, scores = evaluate.tune_constant_lr(exp.model, exp.init_fn, arrays, spec, tune, grid, max(1, FLAGS.seeds // 2))
    accs = evaluate.evaluate_set(exp.model, exp.init_fn, arrays, jnp.full((spec.steps,), lr), spec, exp.eval,
                                 FLAGS.seeds)
    return dict(evaluate.summary(accs), lr=lr, lr_scores=scores)

  subsets, superposed = [], []
  for n in (int(x) for x in FLAGS.per_class):
    idx = np.arange(len(pool)) if n == 0 else data.sample_per_class(pool.labels, n, c, cfg.seed)
    r = dict(score(evaluate.real_subset(pool, idx, c), 64), per_class=n, sentences=len(idx))
    print(f"real subset, {n or 'all'} per class: {100 * r['mean']:.2f} ± {100 * r['std']:.2f}", flush=True)
    subsets.append(r)
  n = cfg.synthetic.n_per_class
  shape = synthetic.SetShape(n * c, cfg.data.max_len, exp.model.config.hidden_size, c, "hard")
  # As build_synthetic stores the set (candidates_per_position included), hard labels.
  syn = synthetic.build("tokens", shape, token_logit_scale=cfg.synthetic.token_logit_scale,
                        candidates_per_position=cfg.synthetic.candidates_per_position)
  for k in (int(x) for x in FLAGS.superpose):
    params, static = synthetic.token_set(syn, pool, n, k, cfg.seed, cfg.synthetic.vocab_size)
    r = dict(score(syn.materialize(params, static), 0), superpose=k, sentences=n * c * k)
    print(f"{n} per class, each superposing {k}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f}", flush=True)
    superposed.append(r)
  return dict(dataset=exp.spec.name, init=cfg.init.to_dict(), model=cfg.model.to_dict(), inner_optimizer=opt,
              inner_steps=cfg.inner.steps, n_per_class=n, subsets=subsets, superposed=superposed)


def gradient_stats(cfg, variants: dict[str, dict]) -> dict:
  out = {}
  for name, overrides in variants.items():
    c = experiment.with_overrides(cfg, overrides)
    exp = experiment.setup(c)
    syn, spec, _, ckpt = distill.make_problem(exp)
    meta = distill.make_meta_loss(exp.model, syn, exp.init_fn, spec, c.outer.real_batch_size, 1)
    grad = jax.jit(jax.grad(lambda learned, key: meta(learned, ckpt["static"], key, exp.device_split(exp.train))[0]))
    gs = []
    for i in range(FLAGS.samples):
      g = grad(ckpt["state"]["learned"], jax.random.PRNGKey(100 + i))["data"]
      gs.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]))
    g = np.stack(gs)
    norms = np.linalg.norm(g, axis=1)
    unit = g / np.maximum(norms[:, None], 1e-30)
    cos = unit @ unit.T
    pairs = cos[np.triu_indices(len(g), 1)]
    out[name] = dict(overrides=overrides, norm_mean=float(norms.mean()), norm_std=float(norms.std()),
                     norm_of_mean=float(np.linalg.norm(g.mean(0))), cosine_mean=float(pairs.mean()),
                     cosine_std=float(pairs.std()), samples=len(g))
    print(name, json.dumps(out[name]), flush=True)
  return out


def pooling_stats(cfg) -> dict:
  exp = experiment.setup(experiment.with_overrides(cfg, {"data.eval_limit": 512}))
  ids, mask = jnp.asarray(exp.eval.input_ids), jnp.asarray(exp.eval.attention_mask)
  states = jax.jit(lambda p: exp.model.apply({"params": p}, ids, mask, method="encode"))
  rows = {name: [] for name in bert.POOLINGS}
  for i in range(FLAGS.samples):
    h = states(exp.init_fn(jax.random.PRNGKey(100 + i)))
    for name in bert.POOLINGS:
      f = np.asarray(bert.pool(h, mask, name))
      rows[name].append(float(np.sqrt(np.mean(f.std(0) ** 2)) / np.sqrt(np.mean(f ** 2))))
  out = {name: dict(mean=float(np.mean(v)), std=float(np.std(v)), samples=len(v)) for name, v in rows.items()}
  print(json.dumps(out), flush=True)
  return dict(dataset=exp.spec.name, init=cfg.init.to_dict(), model=cfg.model.to_dict(), sentences=len(exp.eval),
              relative_spread=out)


def _load_run(run: str) -> tuple[ml_collections.ConfigDict, experiment.Experiment]:
  with open(os.path.join(run, "config_distill.json")) as f:
    cfg = ml_collections.ConfigDict(config.upgrade(json.load(f)["config"]))
  return cfg, experiment.setup(cfg)


def _score_steps(run: str, cfg: ml_collections.ConfigDict, exp, rows: dict) -> list[dict]:
  """Each kept checkpoint of `run`, trained on by --seeds fresh θ0 (the checks' seeds), scored on each row set."""
  syn, _, _ = synthetic.initial_set(exp)
  spec = fit.InnerSpec.from_config(cfg)
  with open(os.path.join(run, "metrics.jsonl")) as f:
    recorded = {m["step"]: m["holdout_accuracy"] for m in map(json.loads, f) if "holdout_accuracy" in m}
  mngr = checkpoint.manager(evaluate.checkpoint_dir(run), create=False)
  steps = []
  for step in sorted(mngr.all_steps()):
    if FLAGS.checkpoint_steps and str(step) not in FLAGS.checkpoint_steps:
      continue
    saved = checkpoint.restore_step(mngr, step)
    learned, static = jax.tree_util.tree_map(jnp.asarray, (saved["state"]["learned"], saved["static"]))
    arrays, lrs = syn.materialize(learned["data"], static), synthetic.step_sizes(learned["lr"], spec.lr_param)
    scores = {name: evaluate.summary(evaluate.evaluate_set(exp.model, exp.init_fn, arrays, lrs, spec, split, FLAGS.seeds,
                                                           seed_offset=evaluate.CHECK_SEED_OFFSET, batch_size=cfg.evaluate.batch_size))
              for name, split in rows.items()}
    steps.append(dict(step=step, recorded_check=recorded.get(step), **scores))
    print(step, {k: round(100 * v["mean"], 2) for k, v in scores.items()}, flush=True)
  return steps


def checks(run: str) -> tuple[ml_collections.ConfigDict, dict]:
  cfg, exp = _load_run(run)
  n = min(cfg.outer.eval_rows, len(exp.holdout))
  # data.holdout's draw, back in file order: the rows the checks scored before it kept the draw order.
  drawn = data.splits.held_out_indices(len(exp.train) + len(exp.holdout), len(exp.holdout), cfg.seed)
  rows = {"file_order_prefix": exp.holdout.subset(np.argsort(drawn)[:n]),
          "random_prefix": exp.holdout.subset(np.arange(n)), "all_holdout": exp.holdout, "eval_split": exp.eval}
  counts = {name: np.bincount(rows[name].labels, minlength=exp.num_classes).tolist()
            for name in ("file_order_prefix", "random_prefix")}
  return cfg, dict(dataset=exp.spec.name, run=run, model=cfg.model.to_dict(), init=cfg.init.to_dict(), rows=n,
                   eval_split=cfg.data.eval_split or exp.spec.eval_split, class_counts=counts,
                   steps=_score_steps(run, cfg, exp, rows))


def lengths(run: str) -> tuple[ml_collections.ConfigDict, dict]:
  """The held-out training rows and the eval split (--length_splits), each cut into --length_bounds buckets of
  non-padding tokens ([CLS] and [SEP] included). SST-2's training split holds the phrases of its parse trees and
  its validation split whole sentences: the checks score the former, evaluation the latter."""
  cfg, exp = _load_run(run)
  bounds = [0, *map(int, FLAGS.length_bounds), cfg.data.max_len]
  rows = {}
  for name, split in (("holdout", exp.holdout), ("eval", exp.eval)):
    if name not in FLAGS.length_splits:
      continue
    tokens = split.attention_mask.sum(axis=1)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
      idx = np.flatnonzero((tokens > lo) & (tokens <= hi))
      if not len(idx):
        continue
      key = f"{name}_{lo + 1}-{hi}"
      rows[key] = split.subset(idx)
    rows[name] = split
  counts = {name: np.bincount(split.labels, minlength=exp.num_classes).tolist() for name, split in rows.items()}
  return cfg, dict(dataset=exp.spec.name, run=run, eval_split=cfg.data.eval_split or exp.spec.eval_split,
                   outer=cfg.outer.to_dict(), bounds=bounds, class_counts=counts, steps=_score_steps(run, cfg, exp, rows))


def main(argv) -> None:
  cmd = argv[1] if len(argv) > 1 else ""
  cfg = FLAGS.config
  os.makedirs(FLAGS.out, exist_ok=True)
  if cmd == "checks":
    cfg, result = checks(FLAGS.run)
  elif cmd == "lengths":
    cfg, result = lengths(FLAGS.run)
  elif cmd == "ceiling":
    result = ceiling(cfg)
  elif cmd == "gradients":
    result = gradient_stats(cfg, {
        "random θ0, fresh word table (paper)": {},
        "random θ0, fixed word table": {"init.fixed_word_embeddings": True},
        "one fixed θ0 (control)": {"init.kind": "fixed"},
    })
  elif cmd == "pooling":
    result = pooling_stats(cfg)
  elif cmd == "coverage":
    result = coverage(cfg)
  else:
    raise app.UsageError("first argument: ceiling | gradients | pooling | coverage | checks | lengths")
  result["command"] = "python scripts/diagnose.py " + " ".join(sys.argv[1:])
  model = cfg.model.size if not cfg.model.pretrained else "pretrained"
  path = os.path.join(FLAGS.out, f"{cmd}_{cfg.data.dataset}_{model}{'_' + FLAGS.tag if FLAGS.tag else ''}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(path)


if __name__ == "__main__":
  runtime.configure()
  app.run(main)
