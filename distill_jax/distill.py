"""The outer loop (Algorithm 1): sample θ0, unroll the inner loop on the
synthetic set, score θT on a real minibatch, and update the synthetic set and
step sizes with Adam through the whole unroll. One `jit` per outer step."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Optional

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from distill_jax import checkpoint, data, inner, metrics, modeling, parallel, synthetic
from distill_jax.errors import UserError

State = dict


@dataclasses.dataclass(frozen=True)
class InnerSpec:
  """Everything about the inner loop except the data it trains on."""

  steps: int
  batch_size: int  # per-step minibatch of the training set; 0 = the whole set each step
  tx: Any  # optax direction (momentum trace or Adam moments)
  lr_param: str
  remat: bool = True
  remat_policy: str = inner.FORWARD_OVER_REVERSE
  scan_unroll: int = 1
  remat_segment: int = 0  # > 1: also checkpoint segments of this many steps (inner.unroll's `segment`)
  backprop_steps: int = 0  # truncated BPTT: meta-gradient through the last k steps only (0 = all)
  random_window: bool = False  # RaT-BPTT: those k steps end at a random step in [k, T]
  # Keep the word table at θ0 even for token-id data: synthetic embeddings never move it, so this is
  # the real-data ceiling of what they could teach (scripts/diagnose.py --freeze_word_table).
  freeze_word_embeddings: bool = False

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "InnerSpec":
    return cls(steps=cfg.inner_steps, batch_size=cfg.inner.batch_size,
               tx=inner.direction(cfg.inner.optimizer, momentum=cfg.inner.momentum, eps=cfg.inner.adam_eps),
               lr_param=cfg.inner.lr_param, remat=cfg.inner.remat,
               remat_policy=cfg.inner.remat_policy, scan_unroll=cfg.inner.scan_unroll,
               remat_segment=cfg.inner.remat_segment, backprop_steps=cfg.inner.backprop_steps,
               random_window=cfg.inner.random_window)


# Above this many rows, minibatches are drawn with replacement: a permutation per
# step would cost O(rows) each (e.g. 67k for SST-2) for no practical difference.
_PERMUTE_MAX_ROWS = 4096


def minibatch_indices(key: jax.Array, steps: int, size: int, batch: int) -> jax.Array:
  """[steps, batch] indices: a fresh random subset of the set at each step (all of it if batch ≤ 0)."""
  if batch <= 0 or batch >= size:
    return jnp.broadcast_to(jnp.arange(size), (steps, size))
  keys = jax.random.split(key, steps)
  if size > _PERMUTE_MAX_ROWS:
    return jax.vmap(lambda k: jax.random.randint(k, (batch,), 0, size))(keys)
  return jax.vmap(lambda k: jax.random.permutation(k, size)[:batch])(keys)


def train_on_set(model, theta0: modeling.Params, data: dict, lrs: jax.Array, key: jax.Array,
                 spec: InnerSpec) -> tuple[modeling.Params, jax.Array]:
  """θ0 → θT by the inner loop on `data` (synthetic embeddings, token distributions or real token ids).

  With embedding inputs the word-embedding table gets no gradient, so it is
  kept out of the scan carry (smaller carry, smaller remat residuals). With
  token distributions only the candidate vocabulary's rows train, so only they
  are carried.
  """
  freeze = "inputs_embeds" in data or "token_probs" in data or spec.freeze_word_embeddings
  frozen_keys = (modeling.WORD_EMBEDDINGS,) if freeze else ()
  trainable, frozen = modeling.split_frozen(theta0, frozen_keys)
  if "token_probs" in data:
    vocab = data["token_vocab"][0]  # the same candidate vocabulary on every row (synthetic.Tokens)
    trainable = modeling.merge(trainable, {_VOCAB_ROWS[0]: {_VOCAB_ROWS[1]: modeling.word_table(frozen)[vocab]}})
  # [T, G] step sizes: one column per parameter group (modeling.lr_groups "layer").
  lr_index = modeling.group_index(trainable, modeling.lr_groups(theta0, "layer")) if lrs.ndim == 2 else None
  size = jax.tree_util.tree_leaves(data)[0].shape[0]
  whole = spec.batch_size <= 0 or spec.batch_size >= size
  xs = None if whole else minibatch_indices(key, lrs.shape[0], size, spec.batch_size)

  def loss_fn(p, idx):
    # The whole set each step needs no gather, whose transpose is a scatter-add per step.
    batch = data if idx is None else jax.tree_util.tree_map(lambda a: a[idx], data)
    p, batch = _embed_tokens(p, batch)
    return modeling.loss_and_accuracy(model, modeling.merge(p, frozen), batch)[0]

  run = functools.partial(inner.unroll, loss_fn, tx=spec.tx, remat=spec.remat,
                          remat_policy=spec.remat_policy, scan_unroll=spec.scan_unroll, lr_index=lr_index,
                          segment=spec.remat_segment)
  steps, window = lrs.shape[0], spec.backprop_steps
  cut = steps - window if 0 < window < steps else 0
  if cut and spec.random_window:
    # RaT-BPTT (Feng et al. 2024): train for a random number of steps `end` in
    # [k, T] and backpropagate through the last k of them. Shapes stay static:
    # steps from `end` on get step size 0, and the carry entering `end - k` is cut.
    end = jax.random.randint(jax.random.fold_in(key, 1), (), window, steps + 1)
    t = jnp.arange(steps)
    live = (t < end).reshape((steps,) + (1,) * (lrs.ndim - 1))
    p_t, _, losses = run(trainable, xs, jnp.where(live, lrs, 0.0), cut=t == end - window)
  elif cut:
    # Truncated BPTT: the first steps run without a gradient path; only the last
    # `backprop_steps` carry meta-gradient (and remat memory) back to the set.
    head = jax.tree_util.tree_map(lambda a: a[:cut], xs)
    p_mid, s_mid, first = run(trainable, head, lrs[:cut])
    p_mid, s_mid = jax.lax.stop_gradient((p_mid, s_mid))
    p_t, _, last = run(p_mid, jax.tree_util.tree_map(lambda a: a[cut:], xs), lrs[cut:], opt_state=s_mid)
    losses = jnp.concatenate([first, last])
  else:
    p_t, _, losses = run(trainable, xs, lrs)
  if "token_probs" in data:  # the trained rows go back into the table
    p_t, rows = _pop_vocab_rows(p_t)
    table = modeling.word_table(frozen).at[vocab].set(rows)
    frozen = modeling.merge(frozen, tu.unflatten_dict({modeling.WORD_EMBEDDINGS: table}))
  return modeling.merge(p_t, frozen), losses


# Where the candidate vocabulary's word-table rows live in the carry of a `Tokens` inner loop:
# under "embeddings", so per-module step sizes treat them as the embeddings' group.
_VOCAB_ROWS = ("embeddings", "candidate_vocab_rows")


def _pop_vocab_rows(p: modeling.Params) -> tuple[modeling.Params, jax.Array]:
  rest = {k: v for k, v in p[_VOCAB_ROWS[0]].items() if k != _VOCAB_ROWS[1]}
  return {**p, _VOCAB_ROWS[0]: rest}, p[_VOCAB_ROWS[0]][_VOCAB_ROWS[1]]


def _embed_tokens(p: modeling.Params, batch: dict) -> tuple[modeling.Params, dict]:
  """Token distributions → embeddings through the carried vocabulary rows (identity for other data)."""
  if "token_probs" not in batch:
    return p, batch
  p, rows = _pop_vocab_rows(p)
  embeds = jnp.einsum("blv,vh->blh", batch["token_probs"], rows.astype(batch["token_probs"].dtype))
  return p, {"inputs_embeds": embeds, "attention_mask": batch["attention_mask"], "targets": batch["targets"]}


def sample_real_batch(key: jax.Array, real: dict, batch_size: int) -> dict:
  n = real["labels"].shape[0]
  idx = jax.random.choice(key, n, (min(batch_size, n),), replace=False)
  return jax.tree_util.tree_map(lambda a: a[idx], real)


def make_meta_loss(model, syn, init_fn: Callable, spec: InnerSpec, real_batch_size: int,
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
      theta_t, inner_losses = train_on_set(model, init_fn(k), data, lrs, k_inner, spec)
      loss, acc = modeling.loss_and_accuracy(model, theta_t, batch)
      return loss, (acc, inner_losses[0], inner_losses[-1])

    losses, (accs, first, last) = jax.vmap(one_init)(init_keys)
    metrics = dict(meta_loss=jnp.mean(losses), meta_acc=jnp.mean(accs),
                   inner_loss_first=jnp.mean(first), inner_loss_last=jnp.mean(last))
    return jnp.mean(losses), metrics

  return meta_loss


def make_train_step(meta_loss: Callable, tx: optax.GradientTransformation, lr_param: str,
                    mesh: Optional[jax.sharding.Mesh] = None) -> Callable:
  """One jitted outer step. A non-finite loss or gradient leaves the state unchanged
  and reports `finite=False`, so the caller can stop with the last good state intact.

  With a `mesh`, inputs and outputs are replicated over it (place them with
  `parallel.replicate`); the sharding inside comes from `meta_loss`.
  """

  def train_step(state: State, static: dict, real: dict) -> tuple[State, dict]:
    key = jax.random.fold_in(state["rng"], state["step"])
    (loss, metrics), grads = jax.value_and_grad(meta_loss, has_aux=True)(
        state["learned"], static, key, real)
    finite = jnp.isfinite(loss) & jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
    updates, opt_state = tx.update(grads, state["opt"], state["learned"])
    learned = optax.apply_updates(state["learned"], updates)
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


def init_state(learned: dict, tx: optax.GradientTransformation, seed: int) -> State:
  return dict(step=jnp.asarray(0, jnp.int32), rng=jax.random.PRNGKey(seed),
              learned=learned, opt=tx.init(learned))


# ---- driver -----------------------------------------------------------------

# Config keys that fix the shapes of a checkpoint: resuming or evaluating with
# other values cannot work, so they are checked before restoring.
SHAPE_KEYS = ("dataset", "max_len", "n_per_class", "inner_steps", "model.size", "model.pretrained",
              "synthetic.kind", "synthetic.num_bases", "synthetic.label_mode", "inner.lr_groups",
              "synthetic.vocab_size")
# Shape keys added after checkpoints existed: a checkpoint without one was written with this value.
_SHAPE_KEY_DEFAULTS = {"inner.lr_groups": "global", "synthetic.vocab_size": 2048}


def _get(cfg: dict, dotted: str):
  for part in dotted.split("."):
    cfg = cfg.get(part, None) if isinstance(cfg, dict) else None
  return cfg


def check_compatible(saved: dict, current: dict, where: str) -> None:
  for key in SHAPE_KEYS:
    was = _get(saved, key)
    was = _SHAPE_KEY_DEFAULTS.get(key) if was is None else was
    if was != _get(current, key):
      raise UserError(f"checkpoint in {where} was written with {key}={was!r} but the config "
                      f"has {_get(current, key)!r}; use --config.{key}={was!r} or a new --workdir")


def _initial_embeddings(exp, idx: np.ndarray, shape: synthetic.SetShape) -> tuple[jax.Array, np.ndarray]:
  """Starting inputs and masks of an embedding-space set: the chosen real examples, or noise."""
  cfg = exp.cfg
  if cfg.synthetic.init == "real":
    table = modeling.word_table(exp.init_fn(jax.random.PRNGKey(cfg.init.seed)))
    return table[jnp.asarray(exp.train.input_ids[idx])], exp.train.attention_mask[idx]
  if cfg.synthetic.init == "random":
    key = jax.random.PRNGKey(cfg.seed + 1)
    embeds = cfg.synthetic.init_std * jax.random.normal(key, (shape.num_examples, shape.seq_len, shape.hidden))
    return embeds, np.ones((shape.num_examples, shape.seq_len), np.int32)
  raise UserError(f"unknown synthetic.init {cfg.synthetic.init!r}; use 'real' or 'random'")


def token_set(syn: synthetic.Tokens, split: data.Split, n_per_class: int, k: int, seed: int,
              vocab_size: int) -> tuple[dict, dict]:
  """A token set's starting params and static arrays: n_per_class examples per class, each the
  superposition of k real rows of `split` of its class (sampled class by class, so rows stay grouped)."""
  c = syn.shape.num_classes
  idx = data.sample_per_class(split.labels, n_per_class * k, c, seed)
  ids = split.input_ids[idx].reshape(n_per_class * c, k, -1)
  vocab = synthetic.candidate_vocab(split.input_ids, ids, vocab_size)
  return syn.init(ids, split.attention_mask[idx].reshape(ids.shape), split.labels[idx][::k], vocab)


def build_synthetic(exp) -> tuple[Any, dict, dict]:
  """The parametrisation, its initial learned params (data + raw step sizes) and static arrays."""
  cfg = exp.cfg
  c = exp.num_classes
  shape = synthetic.SetShape(cfg.n_per_class * c, cfg.max_len, exp.model.config.hidden_size, c,
                             cfg.synthetic.label_mode)
  syn = synthetic.build(cfg.synthetic.kind, shape, cfg.synthetic.num_bases, cfg.synthetic.token_logit_scale,
                        cfg.synthetic.candidates_per_position)
  if cfg.synthetic.kind == "tokens":
    if cfg.synthetic.init != "real":
      raise UserError("synthetic.kind='tokens' starts from real examples; use --config.synthetic.init=real")
    params, static = token_set(syn, exp.train, cfg.n_per_class, cfg.synthetic.superpose, cfg.seed,
                               cfg.synthetic.vocab_size)
  else:
    idx = data.sample_per_class(exp.train.labels, cfg.n_per_class, c, cfg.seed)
    params, static = syn.init(*_initial_embeddings(exp, idx, shape), exp.train.labels[idx])
  lr = synthetic.init_step_sizes(cfg.inner.lr, cfg.inner_steps, cfg.inner.lr_param)
  if cfg.inner.lr_groups != "global":  # [T, G]: only then is the parameter tree's shape needed
    groups = modeling.lr_groups(jax.eval_shape(exp.init_fn, jax.random.PRNGKey(0)), cfg.inner.lr_groups)
    lr = jnp.tile(lr[:, None], (1, len(groups)))
  learned = {"data": params, "lr": lr}
  return syn, learned, static


def outer_tx(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam on the synthetic data and, with its own learning rate, on the raw step sizes."""
  labels = lambda learned: {"data": jax.tree_util.tree_map(lambda _: "data", learned["data"]), "lr": "lr"}
  warm = lambda lr: optax.linear_schedule(0.0, lr, cfg.outer.warmup_steps) if cfg.outer.warmup_steps else lr
  tx = optax.multi_transform({"data": optax.adam(warm(cfg.outer.lr)), "lr": optax.adam(warm(cfg.outer.lr_lr))},
                             labels)
  return optax.chain(optax.clip_by_global_norm(cfg.outer.clip), tx) if cfg.outer.clip else tx


def make_problem(exp):
  """Synthetic set, outer optimizer, jitted train step and initial state for `exp`."""
  cfg = exp.cfg
  syn, learned, static = build_synthetic(exp)
  spec = InnerSpec.from_config(cfg)
  tx = outer_tx(cfg)
  mesh = parallel.mesh_from_config(cfg)
  meta_loss = make_meta_loss(exp.model, syn, exp.init_fn, spec, cfg.outer.real_batch_size,
                             cfg.outer.inits_per_step, mesh=mesh)
  step_fn = make_train_step(meta_loss, tx, spec.lr_param, mesh=mesh)
  ckpt = dict(state=init_state(learned, tx, cfg.seed), static=static)
  # Replicated before any restore: Orbax restores into the template's sharding.
  return syn, spec, step_fn, (parallel.replicate(ckpt, mesh) if mesh is not None else ckpt)


def distill_and_save(exp, workdir: str, make_evaluator: Callable | None = None) -> dict:
  """Runs (or resumes) distillation, checkpointing every `outer.checkpoint_every` steps.

  `make_evaluator(exp, spec, syn)`, if given, builds `evaluator(learned, static)`
  which runs every `outer.eval_every` steps; its accuracy is logged as `eval_accuracy`.
  """
  cfg = exp.cfg
  syn, spec, step_fn, ckpt = make_problem(exp)
  evaluator = make_evaluator(exp, spec, syn) if make_evaluator and cfg.outer.eval_every else None
  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"))
  if checkpoint.latest_step(mngr) is not None:
    check_compatible(checkpoint.restore_config(mngr), cfg.to_dict(), mngr.directory)
    ckpt = checkpoint.restore_state(mngr, ckpt)
    logging.info("resumed from step %d", int(ckpt["state"]["step"]))
  state, static = ckpt["state"], ckpt["static"]
  real = exp.device_split(exp.train)
  mesh = parallel.mesh_from_config(cfg)
  if mesh is not None:
    real = parallel.replicate(real, mesh)
  writer = metrics.Writer(workdir)
  start = int(state["step"])
  writer.truncate_after(start)
  progress = metrics.Progress(cfg.outer.steps, start)
  t0 = time.perf_counter()
  for step in range(start, cfg.outer.steps):
    new_state, m = step_fn(state, static, real)
    if not bool(m["finite"]):
      raise UserError(
          f"non-finite meta-loss or meta-gradient at outer step {step} (step sizes "
          f"{float(m['lr_min']):.3g}..{float(m['lr_max']):.3g}; likely cause: step sizes or outer.lr too large); "
          f"lower --config.outer.lr/--config.outer.lr_lr or --config.inner.lr. Last good checkpoint: "
          f"step {checkpoint.latest_step(mngr)} in {mngr.directory}")
    state = new_state
    done = step + 1
    if done % cfg.outer.log_every == 0 or done == cfg.outer.steps:
      m = {k: float(v) for k, v in m.items() if k != "finite"}
      progress.log(done, **{k: m[k] for k in ("meta_loss", "meta_acc", "grad_norm", "lr_mean")})
      writer.write(done, **m, seconds=time.perf_counter() - t0)
    if evaluator is not None and cfg.outer.eval_every and (done % cfg.outer.eval_every == 0
                                                           or done == cfg.outer.steps):
      acc = evaluator(state["learned"], static)
      logging.info("outer step %d: eval accuracy %.4f", done, acc)
      writer.write(done, eval_accuracy=acc)
    if done % cfg.outer.checkpoint_every == 0 or done == cfg.outer.steps:
      checkpoint.save(mngr, done, dict(state=state, static=static), cfg.to_dict())
  return dict(steps=int(state["step"]), seconds=time.perf_counter() - t0)
