"""Training a model on a set with the one inner loop (`inner.unroll`).

Distillation differentiates through `train_on_set`; evaluation, baselines and
the real-data ceiling run it forward. The set may be synthetic embeddings,
token distributions or real token ids: only this module knows the difference.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import inner, modeling


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
  attention_weight: float = 1.0  # λ of the attention-label KL (modeling.set_loss); sets without labels ignore it

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "InnerSpec":
    return cls(steps=cfg.inner.steps, batch_size=cfg.inner.batch_size,
               tx=inner.direction(cfg.inner.optimizer, momentum=cfg.inner.momentum, eps=cfg.inner.adam_eps),
               lr_param=cfg.inner.lr_param, remat=cfg.inner.remat,
               remat_policy=cfg.inner.remat_policy, scan_unroll=cfg.inner.scan_unroll,
               remat_segment=cfg.inner.remat_segment, backprop_steps=cfg.inner.backprop_steps,
               random_window=cfg.inner.random_window, attention_weight=cfg.inner.attention_weight)


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

  The loss of each step is `modeling.set_loss`: with the KL to the set's
  attention labels when `data` carries them ("attention").

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
    return modeling.set_loss(model, modeling.merge(p, frozen), batch, spec.attention_weight)

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
  rest = {k: v for k, v in batch.items() if k not in ("token_probs", "token_vocab")}  # mask, targets, attention
  return p, {**rest, "inputs_embeds": embeds}
