"""Full-data training: the reference a distilled set is measured against.

An epoch is a sequence of jitted `inner.unroll` chunks over stacked real
batches; the step sizes come from a warm-up + linear-decay schedule. The model
is selected on training rows held out from training (never on the evaluation
split), and the selected model is evaluated on the evaluation split once.

A run resumes: every `train.checkpoint_every` steps, after
`checkpoint.MAX_UNSAVED_SECONDS` without a save, at each epoch's end and on
Ctrl-C the whole training state goes to `train_state/`, and the same command
continues from it. Data order, dropout keys and step sizes are functions of the
step, so a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from distill_jax import checkpoint, data, inner, metrics, modeling, signals
from distill_jax.errors import UserError
from distill_jax.experiment import Experiment

# Config keys that fix a training run's trajectory: resuming under other values would splice two runs.
TRAJECTORY_KEYS = ("seed", "init.kind", "data.train_split", "data.train_limit", "data.holdout_rows",
                   "train.optimizer", "train.learning_rate", "train.momentum", "train.weight_decay",
                   "train.warmup_steps", "train.batch_size", "train.epochs")
RESUME_KEYS = checkpoint.SHAPE_KEYS + TRAJECTORY_KEYS
STATE_DIR, BEST_DIR = "train_state", "train_checkpoints"  # never a distillation's folder


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


def check_resumable(cfg: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses, before anything is written, to resume a training state that another config wrote."""
  checkpoint.check_resumable(os.path.join(workdir, STATE_DIR), cfg.to_dict(), RESUME_KEYS)


def best_epoch(history: np.ndarray) -> int:
  """The first epoch with the highest held-out accuracy among those finished (-1 before any)."""
  done = history[~np.isnan(history)]
  return int(np.argmax(done)) if done.size else -1


def stopped_early(history: np.ndarray, epoch: int, patience: int) -> bool:
  """Whether epochs before `epoch` went `patience` epochs past the best without beating it."""
  best = best_epoch(history[:epoch])
  return epoch > 0 and best != epoch - 1 and epoch - 1 - best >= patience


def train_and_evaluate(exp: Experiment, workdir: str) -> dict:
  """Trains (or resumes training) on the training split less its held-out rows; keeps the model best on them.

  Early stopping after `train.patience` epochs without a held-out gain; the kept
  model's accuracy on the evaluation split is measured once, at the end.
  """
  cfg = exp.cfg
  t = cfg.train
  train_rows, held = exp.train, exp.holdout
  tx = inner.direction(t.optimizer, momentum=t.momentum,
                       weight_decay=t.weight_decay if t.optimizer == "adam" else 0.0)
  steps_per_epoch = data.num_batches(len(train_rows), t.batch_size, drop_remainder=True)
  if not steps_per_epoch:
    raise UserError(f"train.batch_size={t.batch_size} exceeds the {len(train_rows)} training rows; "
                    "lower --config.train.batch_size")
  total = steps_per_epoch * t.epochs
  lrs_all = lr_schedule(cfg, total)
  params = exp.init_fn(jax.random.PRNGKey(cfg.seed))
  # history: held-out accuracy of each finished epoch (NaN until then), which also says where the best is.
  state = dict(params=params, opt_state=tx.init(params), best_params=params,
               history=np.full(t.epochs, np.nan, np.float32))
  mngr = checkpoint.manager(os.path.join(workdir, STATE_DIR), max_to_keep=2)
  best_mngr = checkpoint.manager(os.path.join(workdir, BEST_DIR), max_to_keep=1)
  step = 0
  if mngr.all_steps():
    check = lambda saved: checkpoint.check_compatible(saved, cfg.to_dict(), mngr.directory, RESUME_KEYS)
    step, _, state = checkpoint.restore_newest(mngr, state, check=check, set_aside=True, state=True)
    logging.info("resumed from step %d", step)
  history = np.array(state["history"], np.float32)
  run_chunk = make_chunk_fn(exp, tx)
  writer = metrics.Writer(workdir, "metrics_train.jsonl")  # a distillation in the same workdir keeps its own
  writer.truncate_after(step)
  progress = metrics.Progress(total, step)
  first_epoch, offset = divmod(step, steps_per_epoch)
  last_save = checkpoint.LastSave(step)

  def save(step: int) -> None:
    checkpoint.save(mngr, step, dict(state, history=history), cfg.to_dict())

  for epoch in range(first_epoch, t.epochs):
    if stopped_early(history, epoch, t.patience):
      logging.info("early stopping: no held-out gain for %d epochs", epoch - 1 - best_epoch(history))
      break
    stacked = data.stacked_batches(train_rows, t.batch_size, steps_per_epoch, seed=cfg.seed * 1000 + epoch)
    batches = {k: stacked[k] for k in ("input_ids", "attention_mask", "labels")}
    for start in range(offset if epoch == first_epoch else 0, steps_per_epoch, t.chunk_steps):
      with signals.deferred():
        sl = slice(start, min(start + t.chunk_steps, steps_per_epoch))
        chunk = jax.tree_util.tree_map(lambda a: jnp.asarray(a[sl]), batches)
        n = sl.stop - sl.start
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), step), n)
        new_params, new_opt, loss = run_chunk(state["params"], state["opt_state"], chunk,
                                              jnp.asarray(lrs_all[step:step + n]), keys)
        if not np.isfinite(float(loss)):
          raise UserError(f"training loss became {float(loss)} at step {step + n}; the training state of step "
                          f"{last_save.step} is intact in {mngr.directory}; lower --config.train.learning_rate and "
                          "pass a new --workdir")
        state = dict(state, params=new_params, opt_state=new_opt)
        step += n
        progress.log(step, epoch=epoch, loss=float(loss), lr=float(lrs_all[step - 1]))
        writer.write(step, train_loss=float(loss))
        if sl.stop == steps_per_epoch:
          acc = modeling.accuracy(exp.model, state["params"], held, t.eval_batch_size)
          history[epoch] = acc
          writer.write(step, holdout_accuracy=acc, epoch=epoch)
          logging.info("epoch %d: held-out accuracy %.4f", epoch, acc)
          if best_epoch(history) == epoch:
            state = dict(state, best_params=state["params"])
            checkpoint.save(best_mngr, step, {"params": state["params"]}, cfg.to_dict())
        if (sl.stop == steps_per_epoch or step - last_save.step >= t.checkpoint_every or signals.pending()
            or last_save.overdue()):
          save(step)
          last_save.mark(step)
        if signals.pending():
          raise signals.Interrupted(signals.take(), f"interrupted at step {step}; training state saved in "
                                                    f"{mngr.directory}; rerun the same command to resume")
  best = best_epoch(history)
  eval_acc = modeling.accuracy(exp.model, state["best_params"], exp.eval, t.eval_batch_size)
  logging.info("epoch %d model (best on held-out rows): eval accuracy %.4f", best, eval_acc)
  writer.write(step, eval_accuracy=eval_acc)
  finished = history[~np.isnan(history)]
  return dict(eval_accuracy=eval_acc, best_epoch=best, best_holdout_accuracy=float(finished[best]),
              holdout_accuracy_per_epoch=[float(a) for a in finished], holdout_rows=len(held),
              train_rows=len(train_rows), eval_rows=len(exp.eval),
              eval_split=cfg.data.eval_split or exp.spec.eval_split, learning_rate=t.learning_rate, steps=step)
