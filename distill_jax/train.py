"""Full-data training: the reference a distilled set is measured against.

An epoch is a sequence of jitted `inner.unroll` chunks over stacked real
batches; the step sizes come from a warm-up + linear-decay schedule. The model
is selected on training rows held out from training (never on the evaluation
split), and the selected model is evaluated on the evaluation split once.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from distill_jax import checkpoint, data, inner, metrics, modeling
from distill_jax.errors import UserError
from distill_jax.experiment import Experiment


def lr_schedule(cfg, total_steps: int) -> np.ndarray:
  warm = min(cfg.train.warmup_steps, max(total_steps - 1, 0))
  fn = optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.train.learning_rate, max(warm, 1)),
       optax.linear_schedule(cfg.train.learning_rate, 0.0, max(total_steps - warm, 1))], [warm])
  return np.asarray([fn(i) for i in range(total_steps)], np.float32)


def make_chunk_fn(exp: Experiment, tx):
  model = exp.model

  @jax.jit
  def run_chunk(params, opt_state, batches, lrs, keys):
    def loss_fn(p, x):
      batch, key = x
      return modeling.loss_and_accuracy(model, p, batch, dropout_key=key)[0]
    params, opt_state, losses = inner.unroll(loss_fn, params, (batches, keys), lrs, tx, opt_state,
                                             remat=False)
    return params, opt_state, jnp.mean(losses)
  return run_chunk


def train_and_evaluate(exp: Experiment, workdir: str) -> dict:
  """Trains on the training split less its held-out rows; keeps the model best on those rows.

  Early stopping after `train.patience` epochs without a held-out gain; the kept
  model's accuracy on the evaluation split is measured once, at the end.
  """
  cfg = exp.cfg
  t = cfg.train
  train_rows, held = exp.train, exp.holdout
  tx = inner.direction(t.optimizer, momentum=t.momentum,
                       weight_decay=t.weight_decay if t.optimizer == "adam" else 0.0)
  steps_per_epoch = data.num_batches(len(train_rows), t.batch_size, drop_remainder=True)
  total = steps_per_epoch * t.epochs
  lrs_all = lr_schedule(cfg, total)
  params = exp.init_fn(jax.random.PRNGKey(cfg.seed))
  opt_state = tx.init(params)
  run_chunk = make_chunk_fn(exp, tx)
  writer = metrics.Writer(workdir)
  mngr = checkpoint.manager(os.path.join(workdir, "train_checkpoints"), max_to_keep=1)  # never a distillation's folder
  progress = metrics.Progress(total)
  best, best_epoch, best_params, history, step = -1.0, -1, params, [], 0
  for epoch in range(t.epochs):
    stacked = data.stacked_batches(train_rows, t.batch_size, steps_per_epoch, seed=cfg.seed * 1000 + epoch)
    batches = {k: stacked[k] for k in ("input_ids", "attention_mask", "labels")}
    for start in range(0, steps_per_epoch, t.chunk_steps):
      sl = slice(start, min(start + t.chunk_steps, steps_per_epoch))
      chunk = jax.tree_util.tree_map(lambda a: jnp.asarray(a[sl]), batches)
      n = sl.stop - sl.start
      keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), step), n)
      params, opt_state, loss = run_chunk(params, opt_state, chunk, jnp.asarray(lrs_all[step:step + n]), keys)
      step += n
      if not np.isfinite(float(loss)):
        raise UserError(f"training loss became {float(loss)} at step {step}; lower --config.train.learning_rate "
                        f"(best checkpoint so far is intact in {mngr.directory})")
      progress.log(step, epoch=epoch, loss=float(loss), lr=float(lrs_all[step - 1]))
      writer.write(step, train_loss=float(loss))
    acc = modeling.accuracy(exp.model, params, held, t.eval_batch_size)
    history.append(acc)
    writer.write(step, holdout_accuracy=acc, epoch=epoch)
    logging.info("epoch %d: held-out accuracy %.4f", epoch, acc)
    if acc > best:
      best, best_epoch, best_params = acc, epoch, params
      checkpoint.save(mngr, step, {"params": params}, cfg.to_dict())
    elif epoch - best_epoch >= t.patience:
      logging.info("early stopping: no held-out gain for %d epochs", t.patience)
      break
  eval_acc = modeling.accuracy(exp.model, best_params, exp.eval, t.eval_batch_size)
  logging.info("epoch %d model (best on held-out rows): eval accuracy %.4f", best_epoch, eval_acc)
  writer.write(step, eval_accuracy=eval_acc)
  return dict(eval_accuracy=eval_acc, best_epoch=best_epoch, best_holdout_accuracy=best,
              holdout_accuracy_per_epoch=history, holdout_rows=len(held), train_rows=len(train_rows),
              eval_rows=len(exp.eval), eval_split=cfg.data.eval_split or exp.spec.eval_split,
              learning_rate=t.learning_rate, steps=step)
