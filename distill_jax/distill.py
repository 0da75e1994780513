"""The outer loop (Algorithm 1): sample θ0, unroll the inner loop on the
synthetic set, score θT on a real minibatch, and update the synthetic set and
step sizes with Adam through the whole unroll. One `jit` per outer step."""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from distill_jax import (checkpoint, config as config_lib, data, decode, evaluate, export, fit, metrics, modeling,
                         parallel, signals, synthetic)
from distill_jax.errors import UserError

State = dict


def sample_real_batch(key: jax.Array, real: dict, batch_size: int) -> dict:
  n = real["labels"].shape[0]
  idx = jax.random.choice(key, n, (min(batch_size, n),), replace=False)
  return jax.tree_util.tree_map(lambda a: a[idx], real)


def make_meta_loss(model, syn, init_fn: Callable, spec: fit.InnerSpec, real_batch_size: int,
                   inits_per_step: int, mesh: Optional[jax.sharding.Mesh] = None) -> Callable:
  """meta_loss(learned, static, key, real) -> (loss, metrics), averaged over θ0 samples.

  With a `mesh`, the θ0 samples and the real-batch rows are split over its "data" axis.
  """
  if mesh is not None:
    parallel.check_divisible(mesh, {"outer.inits_per_step": inits_per_step,
                                    "outer.real_batch_size": real_batch_size})

  def meta_loss(learned, static, key, real):
    k_init, k_inner, k_real = jax.random.split(key, 3)
    data = syn.materialize(learned["data"], static)
    lrs = synthetic.step_sizes(learned["lr"], spec.lr_param)
    batch = sample_real_batch(k_real, real, real_batch_size)
    init_keys = jax.random.split(k_init, inits_per_step)
    if mesh is not None:
      init_keys = parallel.shard_leading(init_keys, mesh, "outer.inits_per_step")
      batch = parallel.shard_leading(batch, mesh, "outer.real_batch_size")

    def one_init(k):
      theta_t, inner_losses = fit.train_on_set(model, init_fn(k), data, lrs, k_inner, spec)
      loss, acc = modeling.loss_and_accuracy(model, theta_t, batch)
      return loss, (acc, inner_losses[0], inner_losses[-1])

    losses, (accs, first, last) = jax.vmap(one_init)(init_keys)
    metrics = dict(meta_loss=jnp.mean(losses), meta_acc=jnp.mean(accs),
                   inner_loss_first=jnp.mean(first), inner_loss_last=jnp.mean(last))
    return jnp.mean(losses), metrics

  return meta_loss


def make_train_step(meta_loss: Callable, tx: optax.GradientTransformation, lr_param: str,
                    mesh: Optional[jax.sharding.Mesh] = None) -> Callable:
  """One jitted outer step. A non-finite loss, gradient or updated state leaves the state unchanged
  and reports `finite=False`, so the caller can stop with the last good state intact.

  With a `mesh`, inputs and outputs are replicated over it (place them with
  `parallel.replicate`); the sharding inside comes from `meta_loss`.
  """

  def train_step(state: State, static: dict, real: dict) -> tuple[State, dict]:
    key = jax.random.fold_in(state["rng"], state["step"])
    (loss, metrics), grads = jax.value_and_grad(meta_loss, has_aux=True)(
        state["learned"], static, key, real)
    updates, opt_state = tx.update(grads, state["opt"], state["learned"])
    learned = optax.apply_updates(state["learned"], updates)
    # The update too: a finite gradient times an overflowing learning rate is not a good state.
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(learned) & _all_finite(opt_state)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dict(step=state["step"] + 1, rng=state["rng"],
                     learned=keep(learned, state["learned"]), opt=keep(opt_state, state["opt"]))
    lrs = synthetic.step_sizes(state["learned"]["lr"], lr_param)
    metrics.update(grad_norm=optax.tree.norm(grads), finite=finite,
                   lr_min=jnp.min(lrs), lr_max=jnp.max(lrs), lr_mean=jnp.mean(lrs))
    return new_state, metrics

  if mesh is not None:
    rep = parallel.replicated(mesh)
    return jax.jit(train_step, donate_argnums=0, in_shardings=rep, out_shardings=rep)
  return jax.jit(train_step, donate_argnums=0)


def _all_finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def init_state(learned: dict, tx: optax.GradientTransformation, seed: int) -> State:
  return dict(step=jnp.asarray(0, jnp.int32), rng=jax.random.PRNGKey(seed),
              learned=learned, opt=tx.init(learned))


# ---- driver -----------------------------------------------------------------

# The learned labels' parameters in every parametrisation's `params` (synthetic.py).
LABEL_PARAMS = ("labels", "label_bases")


def outer_tx(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam on the synthetic data and, each with its own learning rate, on the raw step sizes and (with
  `outer.label_lr`) the learned labels: soft-label logits start at 10·onehot, where steps of `outer.lr`
  leave them one-hot for hundreds of outer steps (docs/diagnosis.md, finding 7)."""
  o = cfg.outer
  own = lambda name: "labels" if o.label_lr and name in LABEL_PARAMS else "data"
  groups = lambda learned: {"data": {k: own(k) for k in learned["data"]}, "lr": "lr"}
  warm = lambda lr: optax.linear_schedule(0.0, lr, o.warmup_steps) if o.warmup_steps else lr
  txs = {"data": optax.adam(warm(o.lr)), "lr": optax.adam(warm(o.lr_lr))}
  if o.label_lr:  # a group of its own only when set, so checkpoints from before it restore unchanged
    txs["labels"] = optax.adam(warm(o.label_lr))
  tx = optax.multi_transform(txs, groups)
  return optax.chain(optax.clip_by_global_norm(cfg.outer.clip), tx) if cfg.outer.clip else tx


def make_problem(exp):
  """Synthetic set, outer optimizer, jitted train step and initial state for `exp`."""
  cfg = exp.cfg
  syn, learned, static = synthetic.initial_set(exp)
  spec = fit.InnerSpec.from_config(cfg)
  tx = outer_tx(cfg)
  mesh = parallel.mesh_from_config(cfg)
  meta_loss = make_meta_loss(exp.model, syn, exp.init_fn, spec, cfg.outer.real_batch_size,
                             cfg.outer.inits_per_step, mesh=mesh)
  step_fn = make_train_step(meta_loss, tx, spec.lr_param, mesh=mesh)
  ckpt = dict(state=init_state(learned, tx, cfg.seed), static=static)
  # Replicated before any restore: Orbax restores into the template's sharding.
  return syn, spec, step_fn, (parallel.replicate(ckpt, mesh) if mesh is not None else ckpt)


def check_resumable(cfg: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses, before anything is written, to resume a checkpoint that does not fit `cfg`."""
  checkpoint.check_resumable(os.path.join(workdir, "checkpoints"), cfg.to_dict())


def meta_loss_rows(train: data.Split, min_tokens: int) -> data.Split:
  """The training rows the meta-loss scores: those of at least `min_tokens` tokens, so that a split of short
  phrases (SST-2's) can target the whole sentences it is scored on."""
  if not min_tokens:
    return train
  tokens = train.attention_mask.sum(axis=1)
  longest = int(tokens.max())
  if longest < min_tokens:
    raise UserError(f"outer.real_min_tokens={min_tokens} leaves no training rows (the longest has {longest} "
                    f"tokens); lower it to at most {longest}")
  kept = train.subset(tokens >= min_tokens)
  logging.info("the meta-loss scores the %d of %d training rows with %d tokens or more", len(kept), len(train),
               min_tokens)
  return kept


def distill_and_save(exp, workdir: str) -> dict:
  """Runs (or resumes) distillation, checkpointing every `outer.checkpoint_every` steps (and after
  `checkpoint.MAX_UNSAVED_SECONDS` of wall-clock without a save) and scoring the set on held-out
  training rows every `outer.eval_every` steps (`holdout_accuracy`).

  Ctrl-C or SIGTERM finish the current step, save it and stop (`signals`);
  a non-finite step is never saved.
  """
  cfg = exp.cfg
  syn, spec, step_fn, ckpt = make_problem(exp)
  evaluator = evaluate.make_progress_evaluator(exp, spec, syn) if cfg.outer.eval_every else None
  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"))
  if mngr.all_steps():
    check = lambda saved: checkpoint.check_compatible(saved, cfg.to_dict(), mngr.directory)
    step, saved, ckpt = checkpoint.restore_newest(mngr, ckpt, check=check, set_aside=True, state=True)
    if config_lib.get(saved, "inner.lr") != cfg.inner.lr:
      logging.warning("resuming keeps the step sizes learned so far; inner.lr=%s only sets where new runs start",
                      cfg.inner.lr)
    logging.info("resumed from step %d", step)
  state, static = ckpt["state"], ckpt["static"]
  train = meta_loss_rows(exp.train, cfg.outer.real_min_tokens)
  if cfg.outer.real_batch_size > len(train):
    logging.warning("outer.real_batch_size=%d exceeds the %d training rows: each outer step scores all of them",
                    cfg.outer.real_batch_size, len(train))
  real = exp.device_split(train)
  mesh = parallel.mesh_from_config(cfg)
  if mesh is not None:
    real = parallel.replicate(real, mesh)
  writer = metrics.Writer(workdir)
  start = int(state["step"])
  writer.truncate_after(start)
  progress = metrics.Progress(cfg.outer.steps, start)
  if start < cfg.outer.steps:
    logging.info("compiling the outer step (the first step includes it)...")
  t0 = time.perf_counter()
  last_save = checkpoint.LastSave(start)
  for step in range(start, cfg.outer.steps):
    with signals.deferred():
      new_state, m = step_fn(state, static, real)
      if not bool(m["finite"]):
        raise UserError(
            f"non-finite meta-loss, meta-gradient or update at outer step {step + 1} (step sizes "
            f"{float(m['lr_min']):.3g}..{float(m['lr_max']):.3g}); the last good checkpoint (step "
            f"{checkpoint.latest_step(mngr)}) is intact. Lower --config.outer.lr/--config.outer.lr_lr and rerun "
            "(a resume keeps the learned step sizes; a lower --config.inner.lr needs a new --workdir)")
      state = new_state
      done = step + 1
      if done % cfg.outer.log_every == 0 or done == cfg.outer.steps:
        m = {k: float(v) for k, v in m.items() if k != "finite"}
        progress.log(done, **{k: m[k] for k in ("meta_loss", "meta_acc", "grad_norm", "lr_mean")})
        writer.write(done, **m, seconds=time.perf_counter() - t0)
      if evaluator is not None and (done % cfg.outer.eval_every == 0 or done == cfg.outer.steps):
        acc = evaluator(state["learned"], static)
        logging.info("outer step %d: held-out accuracy %.4f", done, acc)
        writer.write(done, holdout_accuracy=acc)
      if (done % cfg.outer.checkpoint_every == 0 or done == cfg.outer.steps or signals.pending()
          or last_save.overdue()):
        checkpoint.save(mngr, done, dict(state=state, static=static), cfg.to_dict())
        last_save.mark(done)
      if signals.pending():
        raise signals.Interrupted(signals.take(), f"interrupted at step {last_save.step}; checkpoint saved in "
                                                  f"{mngr.directory}; rerun the same command to resume")
  seconds = time.perf_counter() - t0
  exported = export_set(exp, syn, spec, state["learned"], static, os.path.join(workdir, "distilled"))
  return dict(steps=int(state["step"]), seconds=seconds, exported=exported,
              attention_teacher=synthetic.attention_teacher(cfg))


def export_set(exp, syn, spec: fit.InnerSpec, learned: dict, static: dict, directory: str) -> str:
  """The set as portable files (`export.save_set`) with its decoded text, for use outside this tool."""
  arrays = jax.device_get(syn.materialize(learned["data"], static))
  if jax.process_index() != 0:
    return directory
  cfg = exp.cfg
  table = modeling.word_table(exp.init_fn(jax.random.PRNGKey(cfg.init.seed)))
  texts = decode.texts(decode.decode_set(arrays, table), arrays["attention_mask"],
                       data.get_tokenizer(cfg.data.vocab or None))
  return export.save_set(directory, arrays, jax.device_get(synthetic.step_sizes(learned["lr"], spec.lr_param)),
                         config=cfg.to_dict(), label_names=list(exp.spec.label_names), texts=texts,
                         model_config=exp.model.config.to_dict())
