"""Glue between the BERT module and the training loops: θ0 sampling, the
trainable/frozen split and the classification loss."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import chex
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import data
from distill_jax.errors import UserError
from distill_jax.models import bert

Params = dict
WORD_EMBEDDINGS = ("embeddings", "word_embeddings", "embedding")


def build_model(cfg: ml_collections.ConfigDict, num_labels: int,
                pretrained_config: Optional[bert.BertConfig] = None) -> bert.BertForSequenceClassification:
  """The model named by `cfg.model`; a pretrained checkpoint's own config wins on shape."""
  overrides = dict(num_labels=num_labels, hidden_dropout_prob=cfg.model.dropout,
                   attention_probs_dropout_prob=cfg.model.dropout)
  if pretrained_config is not None:
    config = bert.BertConfig.from_dict(pretrained_config.to_dict(), **overrides)
  else:
    config = bert.preset(cfg.model.size, **overrides)
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}
  matmul_dtype = None if cfg.model.matmul_dtype in ("model", cfg.model.dtype) else dtypes[cfg.model.matmul_dtype]
  return bert.BertForSequenceClassification(config, dtype=dtypes[cfg.model.dtype], matmul_dtype=matmul_dtype,
                                            pooling=cfg.model.pooling)


def word_table(params: Params) -> jax.Array:
  """The [V, H] token-embedding table of a parameter tree."""
  return tu.flatten_dict(params)[WORD_EMBEDDINGS]


def split_frozen(params: Params, frozen: tuple[tuple[str, ...], ...]) -> tuple[Params, Params]:
  """(trainable, frozen): frozen leaves get no inner gradient, so they stay out of the scan carry."""
  flat = tu.flatten_dict(params)
  train = {k: v for k, v in flat.items() if k not in frozen}
  fixed = {k: v for k, v in flat.items() if k in frozen}
  return tu.unflatten_dict(train), tu.unflatten_dict(fixed)


def lr_groups(params: Params, kind: str) -> tuple[str, ...]:
  """Names of the parameter groups that get their own step size per inner step.

  "global": one group. "layer": each top-level module (embeddings, every encoder
  layer, pooler, classifier), whose gradients differ in scale by orders of magnitude.
  """
  if kind == "global":
    return ("all",)
  if kind == "layer":
    return tuple(sorted(params))
  raise UserError(f"unknown inner.lr_groups {kind!r}; use 'global' or 'layer'")


def group_index(params: Params, groups: tuple[str, ...]) -> Params:
  """Per leaf of `params`, the column of its group in a [T, G] step-size array."""
  return {k: jax.tree_util.tree_map(lambda _, i=groups.index(k): i, v) for k, v in params.items()}


def merge(trainable: Params, frozen: Params) -> Params:
  return tu.unflatten_dict({**tu.flatten_dict(trainable), **tu.flatten_dict(frozen)})


def fresh_head(params: Params, model: bert.BertForSequenceClassification, key: jax.Array) -> Params:
  """Pretrained body, new classifier: the head is the only part re-sampled per θ0."""
  fresh = bert.init_params(model, key)
  return {**params, "classifier": fresh["classifier"]}


def make_init_fn(model: bert.BertForSequenceClassification, init_cfg: ml_collections.ConfigDict,
                 pretrained: Optional[Params] = None) -> Callable[[jax.Array], Params]:
  """θ0 sampler for the configured distribution.

  - random: the paper's setting, every weight fresh; with `fixed_word_embeddings`
    the token-embedding table is the same for every θ0, so synthetic embeddings
    keep one meaning relative to the real tokens the model is evaluated on.
  - pretrained: checkpoint body, fresh classifier per sample.
  - fixed: one θ0 (seed `init.seed`) whatever the key: a control.
  """
  base_key = jax.random.PRNGKey(init_cfg.seed)
  kind = init_cfg.kind
  if kind == "pretrained":
    if pretrained is None:
      raise UserError("init.kind='pretrained' needs --config.model.pretrained=PATH_OR_HUB_ID")
    return lambda key: fresh_head(pretrained, model, key)
  if kind == "fixed":
    theta = bert.init_params(model, base_key)
    return lambda key: theta
  if kind != "random":
    raise UserError(f"unknown init.kind {kind!r}; use 'random', 'pretrained' or 'fixed'")
  if not init_cfg.fixed_word_embeddings:
    return lambda key: bert.init_params(model, key)
  table = bert.init_params(model, base_key)["embeddings"]["word_embeddings"]

  def init(key):
    p = bert.init_params(model, key)
    return {**p, "embeddings": {**p["embeddings"], "word_embeddings": table}}
  return init


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean CE against probability targets (one-hot, soft or learned labels)."""
  chex.assert_equal_shape([logits, targets])
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1))


def targets_of(batch: dict, num_labels: int) -> jax.Array:
  if "targets" in batch:
    return batch["targets"]
  return jax.nn.one_hot(batch["labels"], num_labels)


def _inputs(batch: dict) -> dict:
  """The model's keyword arguments for a batch of token ids or of input embeddings (whichever it holds)."""
  x = {"inputs_embeds": batch["inputs_embeds"]} if "inputs_embeds" in batch else {"input_ids": batch["input_ids"]}
  return dict(x, attention_mask=batch["attention_mask"])


def classify(model: bert.BertForSequenceClassification, params: Params, batch: dict,
             dropout_key: Optional[jax.Array] = None) -> jax.Array:
  """Logits for a batch of token ids or of input embeddings (whichever it holds)."""
  rngs = {} if dropout_key is None else {"dropout": dropout_key}
  return model.apply({"params": params}, rngs=rngs, deterministic=dropout_key is None, **_inputs(batch))


def classify_with_attention(model: bert.BertForSequenceClassification, params: Params,
                            batch: dict) -> tuple[jax.Array, jax.Array]:
  """Logits and the [B, layers, heads, L, L] attention probabilities of the same forward pass (no dropout)."""
  logits, state = model.apply({"params": params}, mutable="intermediates", **_inputs(batch))
  return logits, bert.stacked_attention(state["intermediates"])


def attention_of(model: bert.BertForSequenceClassification, params: Params, batch: dict) -> jax.Array:
  """[B, layers, heads, L, L] attention probabilities of the encoder alone: a teacher's head plays no part."""
  _, state = model.apply({"params": params}, method="encode", mutable="intermediates", **_inputs(batch))
  return bert.stacked_attention(state["intermediates"])


# Where `attention_kl` clamps probabilities (Maekawa et al. add the same 1e-12 inside their log).
ATTENTION_FLOOR = 1e-12


def attention_kl(targets: jax.Array, attention: jax.Array, mask: jax.Array) -> jax.Array:
  """KL(targets ‖ attention) over the keys, averaged over examples, layers, heads and query positions.

  Both are [B, layers, heads, L, L] distributions over the last (key) axis.
  Padding is left out on both axes: its keys hold no mass and its queries'
  outputs reach neither the [CLS] state nor the masked mean. Summed over keys
  and averaged over the rest as Maekawa et al. 2023 do (their sets have no
  padding). Probabilities below `ATTENTION_FLOOR` are read as it, so a 0 target
  contributes exactly 0 and the log's first and second derivatives stay finite
  (the meta-gradient differentiates the inner gradient once more; at the
  smallest normal float, 1/p² overflows).
  """
  chex.assert_equal_shape([targets, attention])
  chex.assert_shape(mask, (targets.shape[0], targets.shape[-1]))
  log = lambda p: jnp.log(jnp.maximum(p, ATTENTION_FLOOR))
  log_ratio = log(targets) - log(attention)
  keys = mask[:, None, None, None, :] > 0
  kl = jnp.sum(jnp.where(keys, targets * log_ratio, 0.0), axis=-1)  # [B, layers, heads, L queries]
  queries = jnp.broadcast_to(mask[:, None, None, :] > 0, kl.shape)
  return jnp.sum(jnp.where(queries, kl, 0.0)) / jnp.maximum(jnp.sum(queries), 1)


def loss_and_accuracy(model: bert.BertForSequenceClassification, params: Params, batch: dict,
                      dropout_key: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  logits = classify(model, params, batch, dropout_key)
  targets = targets_of(batch, logits.shape[-1])
  loss = soft_cross_entropy(logits, targets)
  acc = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
  return loss, acc


def set_loss(model: bert.BertForSequenceClassification, params: Params, batch: dict,
             attention_weight: float) -> jax.Array:
  """The loss of a training step on a set: CE against its targets, plus λ·`attention_kl` to its
  attention labels when it carries them (real data does not: its loss is the CE alone)."""
  if "attention" not in batch:
    return loss_and_accuracy(model, params, batch)[0]
  logits, attention = classify_with_attention(model, params, batch)
  ce = soft_cross_entropy(logits, targets_of(batch, logits.shape[-1]))
  return ce + attention_weight * attention_kl(batch["attention"], attention, batch["attention_mask"])


def accuracy(model: bert.BertForSequenceClassification, params: Params, split: data.Split,
             batch_size: int = 256, length_multiple: int = 16) -> float:
  """Accuracy over the whole split, in batches of similar length (`data.length_batches`; a
  `length_multiple` of max_len or more keeps every batch at full length)."""
  predict = _predict_fn(model)
  correct = 0
  for idx, ids, mask in data.length_batches(split, batch_size, length_multiple):
    pred = np.asarray(predict(params, ids, mask))[:len(idx)]
    correct += int((pred == split.labels[idx]).sum())
  return correct / max(len(split), 1)


@functools.lru_cache(maxsize=None)
def _predict_fn(model: bert.BertForSequenceClassification) -> Callable:
  @jax.jit
  def predict(params, ids, mask):
    return jnp.argmax(classify(model, params, dict(input_ids=ids, attention_mask=mask)), -1)
  return predict
