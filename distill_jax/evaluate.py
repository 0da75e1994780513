"""Accuracy of trained models, and evaluation of distilled sets against baselines.

Every model trained here — on a distilled set, a real subset (random, a
coreset or one of equal storage) or decoded text — goes through
`fit.train_on_set`, the same inner loop distillation differentiates through.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from distill_jax import (checkpoint, config as config_lib, coreset, data, decode, export, fit, metrics, modeling,
                         signals, synthetic)
from distill_jax.errors import UserError


@functools.lru_cache(maxsize=None)
def make_trainer(model, spec: fit.InnerSpec) -> Callable:
  """jit(θ0 key, data, lrs) → θT; forward only, so no remat is needed."""
  # Forward only: no remat, and every one of the T steps (no truncation or random window).
  fwd = fit.InnerSpec(**{**spec.__dict__, "remat": False, "backprop_steps": 0, "random_window": False})

  @jax.jit
  def train(theta0, data_arrays, lrs, key):
    theta_t, losses = fit.train_on_set(model, theta0, data_arrays, lrs, key, fwd)
    return theta_t, losses[-1]
  return train


def evaluate_set(model, init_fn: Callable, data_arrays: dict, lrs: jax.Array, spec: fit.InnerSpec,
                 split: data.Split, seeds: int, seed_offset: int = 1000, batch_size: int = 256) -> list[float]:
  """Trains `seeds` fresh θ0 on `data_arrays` and returns each one's accuracy on `split`.

  Seeds start at `seed_offset` so evaluation never reuses a θ0 key of distillation.
  """
  train = make_trainer(model, spec)
  accs = []
  for s in range(seeds):
    k_init, k_inner = jax.random.split(jax.random.PRNGKey(seed_offset + s))
    theta_t, _ = train(init_fn(k_init), data_arrays, lrs, k_inner)
    accs.append(modeling.accuracy(model, theta_t, split, batch_size))
  return accs


def real_subset(split: data.Split, indices: np.ndarray, num_classes: int) -> dict:
  """A real subset as a training set of token ids with one-hot targets."""
  return dict(input_ids=jnp.asarray(split.input_ids[indices]),
              attention_mask=jnp.asarray(split.attention_mask[indices]),
              targets=jax.nn.one_hot(jnp.asarray(split.labels[indices]), num_classes))


def summary(accs: list[float]) -> dict:
  return dict(mean=float(np.mean(accs)), std=float(np.std(accs)), n=len(accs), accs=[float(a) for a in accs])


def tune_constant_lr(model, init_fn, train_arrays: dict, spec: fit.InnerSpec, tune_split: data.Split,
                     grid: tuple, seeds: int) -> tuple[float, dict]:
  """Best constant step size on held-out training rows (never on the evaluation split)."""
  scores = {}
  for lr in grid:
    lrs = jnp.full((spec.steps,), lr, jnp.float32)
    scores[float(lr)] = float(np.mean(evaluate_set(model, init_fn, train_arrays, lrs, spec, tune_split,
                                                   seeds, seed_offset=2000)))
  best = max(scores, key=scores.get)
  return best, scores


def real_ceiling(model, init_fn, train: data.Split, num_classes: int, spec: fit.InnerSpec,
                 tune: data.Split, split: data.Split, grid: tuple, seeds: int, batch_size: int = 64,
                 eval_batch_size: int = 256) -> dict:
  """Accuracy after `spec.steps` inner-optimizer steps on real minibatches of `batch_size`.

  The ceiling of what T steps of this inner optimizer can teach from this θ0
  distribution with real data; a distilled set that beats it teaches more than
  the `batch_size × T` real examples the ceiling sees. Step size tuned on `tune`.
  """
  spec = dataclasses.replace(spec, batch_size=batch_size)
  arrays = real_subset(train, np.arange(len(train)), num_classes)
  best_lr, scores = tune_constant_lr(model, init_fn, arrays, spec, tune, grid, max(1, seeds // 2))
  accs = evaluate_set(model, init_fn, arrays, jnp.full((spec.steps,), best_lr), spec, split, seeds,
                      batch_size=eval_batch_size)
  return dict(summary(accs), lr=best_lr, lr_scores=scores, steps=spec.steps, batch_size=batch_size)


# Bump when the ceiling's procedure changes, so no earlier measurement is reused for it.
CEILING_VERSION = 1


def ceiling_key(cfg: ml_collections.ConfigDict) -> dict:
  """What the real-data ceiling depends on: data, model, θ0 distribution, inner loop, grid and seeds.

  Not the set: every budget of one dataset and recipe shares one ceiling, so
  `evaluate.ceiling_cache` lets them measure it once.
  """
  d, e = cfg.data, cfg.evaluate
  return dict(version=CEILING_VERSION, seed=cfg.seed,
              data={k: d[k] for k in ("dataset", "data_dir", "vocab", "train_split", "eval_split", "max_len",
                                      "train_limit", "eval_limit", "holdout_rows")},
              model=cfg.model.to_dict(), init=cfg.init.to_dict(), inner=cfg.inner.to_dict(),
              evaluate=dict(lr_grid=[float(x) for x in e.lr_grid], seeds=e.seeds, batch_size=e.ceiling_batch_size))


def cached(folder: str, name: str, key: dict, compute: Callable[[], dict]) -> dict:
  """`compute()`, or the result an earlier call stored under `folder` for the same `key` (then with
  `reused_from`). A damaged or foreign file is measured again and replaced."""
  key = json.loads(json.dumps(key, default=str))  # as a stored key reads back: lists, not tuples
  blob = json.dumps(key, sort_keys=True)
  path = os.path.join(folder, f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.json")
  try:
    with open(path) as f:
      stored = json.load(f)
    if stored["key"] == key:
      logging.info("reusing %s (measured for the same settings)", path)
      return dict(stored["result"], reused_from=path)
    logging.warning("%s holds another measurement's settings; measuring again", path)
  except FileNotFoundError:
    pass
  except (OSError, ValueError, KeyError, TypeError) as err:
    logging.warning("cannot read %s (%s); measuring again and replacing it", path, err)
  result = compute()
  os.makedirs(folder, exist_ok=True)
  with signals.deferred(hard=True):  # a Ctrl-C now stops the run after the file, not inside it
    metrics.write_json(path, dict(key=key, result=result))
  return result


Part = Callable[[str, Callable[[], dict]], dict]


def measure_now(name: str, compute: Callable[[], dict]) -> dict:  # pylint: disable=unused-argument
  """The `Part` that keeps nothing: every part is measured."""
  return compute()


def set_digest(arrays: dict) -> str:
  """What identifies a set's numbers, so a kept part is never reused for another set."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.asarray(arrays[name])
    h.update(f"{name}{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def real_baseline(exp, spec: fit.InnerSpec, idx: np.ndarray) -> dict:
  """Training rows `idx` as a set, through the distilled set's procedure: a constant step size tuned
  on the held-out rows (never on the evaluation split), then `evaluate.seeds` fresh θ0 scored on the eval split."""
  e = exp.cfg.evaluate
  subset = real_subset(exp.train, idx, exp.num_classes)
  best_lr, scores = tune_constant_lr(exp.model, exp.init_fn, subset, spec, exp.holdout, tuple(e.lr_grid),
                                     max(1, e.seeds // 2))
  accs = evaluate_set(exp.model, exp.init_fn, subset, jnp.full((spec.steps,), best_lr), spec, exp.eval, e.seeds,
                      batch_size=e.batch_size)
  return dict(summary(accs), lr=best_lr, lr_scores=scores, n_examples=int(len(idx)))


def coreset_subsets(exp, spec: fit.InnerSpec, part: Part = measure_now) -> dict:
  """`<method>_subset` for each of `evaluate.coresets`: n_per_class training rows per class, chosen by
  the method (coreset.py), each trained and scored by `real_baseline` (through `part`).

  "random" draws from every training row, as the random baseline always has; the
  feature-based methods choose among `evaluate.coreset_pool` random training rows
  (0 = all), whose features come from θ0 of `init.seed` (computed only when a method is measured).
  """
  cfg, e = exp.cfg, exp.cfg.evaluate
  out, n, pool = {}, cfg.synthetic.n_per_class, np.arange(len(exp.train))
  rows = coreset.candidates(pool, e.coreset_pool, cfg.seed)
  if set(e.coresets) - {"random"}:
    out["coreset_features"] = ("mean-pooled final states of the pretrained body" if cfg.init.kind == "pretrained"
                               else "mean-pooled final states of a random-init θ0 (random features)")
    out["coreset_pool"] = dict(rows=int(len(rows)), of=int(len(pool)))
  features = functools.cache(lambda: coreset.features(exp.model, exp.init_fn(jax.random.PRNGKey(cfg.init.seed)),
                                                      exp.train.subset(rows), e.batch_size))

  def measure(method: str) -> dict:
    cand, f = (pool, None) if method == "random" else (rows, features())
    idx = cand[coreset.select(method, f, exp.train.labels[cand], n, exp.num_classes, cfg.seed)]
    return real_baseline(exp, spec, idx)
  for method in e.coresets:
    out[f"{method}_subset"] = r = part(f"{method}_subset", functools.partial(measure, method))
    logging.info("%s real subset (lr %.3g): %.4f ± %.4f", method, r["lr"], r["mean"], r["std"])
  return out


def equal_storage_subset(exp, spec: fit.InnerSpec, budget: int) -> dict:
  """Random training rows, class-balanced, whose token ids take at most `budget` bytes (the set's own),
  trained by `real_baseline`: what the set's storage buys as real text.

  When the inner loop takes the whole set each step (inner.batch_size 0), a
  subset larger than `evaluate.equal_storage_batch_size` rows is minibatched at
  that size instead.
  """
  cfg = exp.cfg
  row_bytes = synthetic.token_bytes(exp.train.attention_mask)
  picked = coreset.within_bytes(exp.train.labels, row_bytes, budget, exp.num_classes, cfg.seed)
  info = dict(n_examples=int(len(picked)), bytes=int(row_bytes[picked].sum()), budget_bytes=int(budget))
  if not len(picked):
    return dict(info, skipped="not one training row fits in the set's bytes")
  if not spec.batch_size and len(picked) > cfg.evaluate.equal_storage_batch_size:
    spec = dataclasses.replace(spec, batch_size=cfg.evaluate.equal_storage_batch_size)
  r = dict(real_baseline(exp, spec, picked), **info,
           batch_size=min(spec.batch_size or len(picked), len(picked)))
  logging.info("equal-storage real subset (%d rows, %d B, lr %.3g): %.4f ± %.4f", len(picked), info["bytes"],
               r["lr"], r["mean"], r["std"])
  return r


# θ0 keys of the periodic checks: apart from distillation's and from evaluation's (evaluate_set's 1000).
CHECK_SEED_OFFSET = 3000


def make_progress_evaluator(exp, spec: fit.InnerSpec, syn) -> Callable[[dict, dict], float]:
  """Mean accuracy of `outer.eval_seeds` fresh models on `outer.eval_rows` held-out training rows.

  Held-out, not the eval split: these curves choose outer-step budgets.
  """
  o = exp.cfg.outer
  rows = exp.holdout.subset(np.arange(min(o.eval_rows, len(exp.holdout))))  # a random draw: data.holdout's order

  def evaluator(learned, static):
    lrs = synthetic.step_sizes(learned["lr"], spec.lr_param)
    accs = evaluate_set(exp.model, exp.init_fn, syn.materialize(learned["data"], static), lrs, spec, rows,
                        o.eval_seeds, seed_offset=CHECK_SEED_OFFSET, batch_size=exp.cfg.evaluate.batch_size)
    return float(np.mean(accs))
  return evaluator


def checkpoint_dir(path: str) -> str:
  """Accepts a run's workdir or its `checkpoints/` folder."""
  sub = os.path.join(path, "checkpoints")
  return sub if os.path.isdir(sub) else path


def check_source(path: str) -> None:
  """Refuses a missing `evaluate.checkpoint` before the workdir is made."""
  if not export.holds_set(path) and not os.path.isdir(checkpoint_dir(path)):
    raise UserError(f"no checkpoint directory or distilled set at {path}; pass --config.evaluate.checkpoint=WORKDIR "
                    "of a distillation run (or its distilled/ export)")


def eval_config(cli_cfg: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """The distillation run's config, with this command's data paths and evaluation settings.

  Keys the checkpoint predates keep this command's values (their defaults reproduce
  the behaviour from before the key existed), so old checkpoints stay loadable.
  """
  cfg = ml_collections.ConfigDict(cli_cfg.to_dict())

  def merge(node: ml_collections.ConfigDict, values: dict) -> None:
    for key, value in values.items():
      if isinstance(value, dict) and isinstance(node.get(key), ml_collections.ConfigDict):
        merge(node[key], value)
      else:
        node[key] = value

  with cfg.unlocked(), cfg.ignore_type():
    merge(cfg, saved)
    for key in ("data_dir", "vocab", "cache_dir", "eval_split", "eval_limit"):
      cfg.data[key] = cli_cfg.data[key]
    cfg.mode = "evaluate"
    cfg.evaluate = cli_cfg.evaluate
    if cli_cfg.evaluate.init_kind:
      cfg.init.kind = cli_cfg.evaluate.init_kind
  return cfg


def _restore_set(mngr, learned0: dict, static0: dict) -> tuple[dict, dict, int]:
  """The checkpoint's learned set, static arrays and outer step, checked against the config's shapes.

  Restored without the optimizer state: evaluation needs only the set.
  """
  ckpt = checkpoint.restore_state(mngr)
  learned, static = ckpt["state"]["learned"], ckpt["static"]
  want = jax.tree_util.tree_map(lambda a: (tuple(a.shape), str(a.dtype)), (learned0, static0))
  got = jax.tree_util.tree_map(lambda a: (tuple(a.shape), str(a.dtype)), (learned, static))
  if want != got:
    raise UserError(f"checkpoint {mngr.directory} does not fit the config saved inside it (its arrays differ "
                    "from the set this code builds); evaluate it with the distill_jax version that wrote it")
  as_device = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)
  return as_device(learned), as_device(static), int(ckpt["state"]["step"])


def evaluate_checkpoint(cli_cfg: ml_collections.ConfigDict, setup: Callable, parts_dir: str = "") -> dict:
  """Distilled set vs its own starting point, real subsets of the same size (random and coresets), a
  real subset of the same storage, the real-data ceiling and its decoded text; and its storage.

  Each measured part is kept in `parts_dir` (when given) under the evaluation's config
  and the set's digest, so a stopped evaluation continues where it stopped: on IMDB the
  parts take hours of CPU together.
  """
  source = cli_cfg.evaluate.checkpoint
  exported = export.load_distilled(source) if export.holds_set(source) else None
  if exported is None:
    mngr = checkpoint.manager(checkpoint_dir(source), create=False)
    saved = checkpoint.restore_config(mngr)
  else:
    saved = config_lib.upgrade(exported["config"])
  cfg = eval_config(cli_cfg, saved)
  config_lib.validate(cfg)
  if cfg.data.dataset != cli_cfg.data.dataset:
    logging.warning("evaluating on %s, the dataset of the distilled set (the config names %s)",
                    cfg.data.dataset, cli_cfg.data.dataset)
  exp = setup(cfg)
  syn, start, start_static = synthetic.initial_set(exp)
  spec = fit.InnerSpec.from_config(cfg)
  if exported is None:
    learned, static, outer_steps = _restore_set(mngr, start, start_static)
    syn_data = syn.materialize(learned["data"], static)
    lrs = synthetic.step_sizes(learned["lr"], spec.lr_param)
    data_floats, stored = synthetic.num_learned_floats(learned["data"]), learned
    ids = synthetic.defining_token_ids(static)
  else:  # the exported arrays are the set itself: what it stores is what it is
    syn_data = {k: jnp.asarray(exported[k]) for k in (*export.KEYS[exported["inputs"]], *export.OPTIONAL_KEYS)
                if k in exported}
    lrs, outer_steps = jnp.asarray(exported["step_sizes"]), cfg.outer.steps
    floats = {k: v for k, v in syn_data.items() if v.dtype == jnp.float32}
    data_floats, stored = synthetic.num_learned_floats(floats), dict(floats, step_sizes=lrs)
    ids = synthetic.defining_token_ids(syn_data)
  e = cfg.evaluate
  n_syn = cfg.synthetic.n_per_class * exp.num_classes
  part: Part = measure_now
  if parts_dir:
    key = dict(config=cfg.to_dict(), set=set_digest(dict(syn_data, step_sizes=lrs)))
    part = lambda name, compute: cached(parts_dir, name, key, compute)
  run = functools.partial(evaluate_set, exp.model, exp.init_fn, spec=spec, split=exp.eval, seeds=e.seeds,
                          batch_size=e.batch_size)
  result = dict(dataset=exp.spec.name, eval_split=cfg.data.eval_split or exp.spec.eval_split,
                train_split=cfg.data.train_split or exp.spec.train_split, n_per_class=cfg.synthetic.n_per_class,
                num_examples=n_syn, inner_steps=cfg.inner.steps, init_kind=cfg.init.kind,
                inner_optimizer=cfg.inner.optimizer, label_mode=cfg.synthetic.label_mode,
                synthetic_kind=cfg.synthetic.kind, superpose=cfg.synthetic.superpose,
                candidates_per_position=cfg.synthetic.candidates_per_position,
                candidate_choice=cfg.synthetic.candidate_choice,
                fixed_word_embeddings=cfg.init.fixed_word_embeddings,
                pooling=cfg.model.pooling, attention_teacher=synthetic.attention_teacher(cfg),
                attention_weight=cfg.inner.attention_weight if "attention" in syn_data else None,
                outer_steps=outer_steps, step_sizes=np.asarray(lrs).tolist(),
                storage_floats=data_floats,  # the data parametrisation alone, as older results have it
                storage=synthetic.storage(stored, exp.train.attention_mask, ids))
  result["distilled"] = part("distilled", lambda: summary(run(data_arrays=syn_data, lrs=lrs)))
  logging.info("distilled: %.4f ± %.4f", result["distilled"]["mean"], result["distilled"]["std"])
  if e.baselines:
    # The set as it started (outer step 0, step sizes inner.lr): what distillation itself added.
    result["initial_set"] = part("initial_set", lambda: summary(run(
        data_arrays=syn.materialize(start["data"], start_static), lrs=synthetic.step_sizes(start["lr"], spec.lr_param))))
    logging.info("initial set: %.4f ± %.4f", result["initial_set"]["mean"], result["initial_set"]["std"])
    result.update(coreset_subsets(exp, spec, part))
  if e.equal_storage:
    result["equal_storage_subset"] = part("equal_storage_subset",
                                          lambda: equal_storage_subset(exp, spec, result["storage"]["bytes"]))
  if e.ceiling_batch_size:
    measure = lambda: real_ceiling(exp.model, exp.init_fn, exp.train, exp.num_classes, spec, exp.holdout,
                                   exp.eval, tuple(e.lr_grid), e.seeds, e.ceiling_batch_size, e.batch_size)
    result["real_ceiling"] = (cached(e.ceiling_cache, f"ceiling-{exp.spec.name}", ceiling_key(cfg), measure)
                              if e.ceiling_cache else part("real_ceiling", measure))
    logging.info("real-data ceiling (T=%d, batch %d): %.4f ± %.4f", spec.steps, e.ceiling_batch_size,
                 result["real_ceiling"]["mean"], result["real_ceiling"]["std"])
  if e.decode:
    table = modeling.word_table(exp.init_fn(jax.random.PRNGKey(cfg.init.seed)))
    tok = data.get_tokenizer(cfg.data.vocab or None)
    # Token distributions decode to their most likely tokens, whatever the metric ("argmax").
    for metric in ("argmax",) if "token_probs" in syn_data else ("cosine", "l2"):
      ids = decode.decode_set(syn_data, table, metric)
      # The same set with text for inputs: its targets and, when it has them, its attention labels.
      decoded = dict({k: syn_data[k] for k in ("attention_mask", "targets", "attention") if k in syn_data},
                     input_ids=ids)
      texts = decode.texts(ids, syn_data["attention_mask"], tok)
      result[f"decoded_{metric}"] = part(f"decoded_{metric}", lambda: dict(summary(run(data_arrays=decoded, lrs=lrs)),
                                                                      texts=texts))  # pylint: disable=cell-var-from-loop
  return result
