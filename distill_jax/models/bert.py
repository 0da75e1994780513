"""BERT encoder + [CLS] pooler + classifier in Flax linen.

Linen (not NNX) because the distillation engine treats parameters as plain
pytrees: θ0 is sampled, split into trainable/frozen parts, carried through a
`lax.scan` and differentiated. Linen's `init`/`apply` keep parameters outside
the module, which is exactly that shape; no graph/state splitting is needed.

Module and parameter names mirror Hugging Face's `BertModel` so checkpoint
loading (`models/hf.py`) is a mechanical rename.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import matmul


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture hyper-parameters, named as in HF `config.json`."""

  vocab_size: int = 30522
  hidden_size: int = 128
  num_hidden_layers: int = 2
  num_attention_heads: int = 2
  intermediate_size: int = 512
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  num_labels: int = 2

  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides: Any) -> "BertConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# Google's BERT miniatures (Turc et al. 2019) plus BERT-base and MiniLM-L6.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "minilm-l6": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
}

_ACTIVATIONS = {
    # HF's erf form: `nn.gelu(approximate=False)` uses erfc (a two-branch select), which
    # costs ~2× as much on CPU forward and backward for no accuracy that matters here.
    "gelu": lambda x: 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476)),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "tanh": jnp.tanh,
}


def preset(name: str, **overrides: Any) -> BertConfig:
  if name not in PRESETS:
    from distill_jax.errors import UserError
    raise UserError(f"unknown model size {name!r}; use one of {sorted(PRESETS)}")
  return BertConfig(**{**PRESETS[name], **overrides})


class Embeddings(nn.Module):
  """Word (skipped when `inputs_embeds` is given) + position + type, then LayerNorm."""

  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, inputs_embeds, token_type_ids, deterministic):
    cfg = self.config
    init = nn.initializers.normal(cfg.initializer_range)
    word = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init, name="word_embeddings")
    if inputs_embeds is None:
      inputs_embeds = word(input_ids)
    elif self.is_initializing():
      word(jnp.zeros((1, 1), jnp.int32))  # create the table even when unused
    # A slice and a one-hot matmul instead of gathers: their gradients are a pad and a
    # matmul, where a gather's is a scatter-add (serial and the slowest op of the
    # inner step's backward pass on CPU).
    seq_len = inputs_embeds.shape[1]
    pos = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                   name="position_embeddings").embedding[None, :seq_len]
    typ_table = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                         name="token_type_embeddings").embedding
    typ = jax.nn.one_hot(token_type_ids, cfg.type_vocab_size, dtype=typ_table.dtype) @ typ_table
    x = inputs_embeds.astype(self.dtype) + pos.astype(self.dtype) + typ.astype(self.dtype)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="LayerNorm")(x)
    return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class _DenseParams(nn.Module):
  """A `DenseGeneral`'s kernel and bias (same names, shapes and init), returned unapplied."""

  shape: tuple[int, ...]
  kernel_init: Any

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    return (self.param("kernel", self.kernel_init, self.shape),
            self.param("bias", nn.initializers.zeros_init(), self.shape[1:]))


# Name of the attention probabilities each `SelfAttention` sows into the "intermediates" collection.
ATTENTION = "attention_probs"


class SelfAttention(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  matmul_dtype: Any = None  # operand dtype of the dense layers' matmuls (models/matmul.py); None = dtype

  @nn.compact
  def __call__(self, x, mask, deterministic):
    cfg = self.config
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    dg = matmul.dot_general(self.matmul_dtype)
    b, l, h = x.shape
    tokens = x.reshape(b * l, -1).astype(self.dtype)  # see `Layer`: 2-D matmuls keep the backward pass transpose-free
    # Query, key and value (HF's three layers) as one [H, 3H] matmul: one wider dot instead of three
    # narrow ones in the forward pass, its transpose and the meta-gradient's second derivatives.
    init = nn.initializers.normal(cfg.initializer_range)
    proj = [_DenseParams((h, heads, head_dim), init, name=n)() for n in ("query", "key", "value")]
    w = jnp.concatenate([kernel.reshape(h, -1) for kernel, _ in proj], axis=1).astype(self.dtype)
    bias = jnp.concatenate([bias.reshape(-1) for _, bias in proj]).astype(self.dtype)
    qkv = matmul.matmul(tokens, w, self.matmul_dtype) + bias
    q, k, v = (a.reshape(b, l, heads, head_dim) for a in jnp.split(qkv, 3, axis=1))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(self.dtype)
    big_neg = jnp.finfo(scores.dtype).min
    scores = jnp.where(mask[:, None, None, :] > 0, scores, big_neg)
    # Softmax in at least float32 (bf16 logits lose too much), in float64 when asked.
    probs = jax.nn.softmax(scores.astype(jnp.promote_types(self.dtype, jnp.float32)), axis=-1)
    # [B, heads, L, L] before dropout, kept only when "intermediates" is mutable (`attention_probs`):
    # otherwise `sow` is a no-op, so the forward pass is the same with or without attention labels.
    self.sow("intermediates", ATTENTION, probs)
    probs = probs.astype(self.dtype)
    probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b * l, heads, head_dim)
    out = nn.DenseGeneral(cfg.hidden_size, axis=(-2, -1), dtype=self.dtype, name="output", dot_general=dg,
                          kernel_init=nn.initializers.normal(cfg.initializer_range))(ctx)
    return out.reshape(b, l, -1)


class Layer(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x, mask, deterministic):
    cfg = self.config
    init = nn.initializers.normal(cfg.initializer_range)
    drop = nn.Dropout(cfg.hidden_dropout_prob)
    dg = matmul.dot_general(self.matmul_dtype)
    h = SelfAttention(cfg, self.dtype, self.matmul_dtype, name="attention")(x, mask, deterministic)
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="attention_LayerNorm")(
        x + drop(h, deterministic=deterministic))
    # Dense layers see [B·L, H] tokens: on a [B, L, H] input the weight gradient contracts
    # two dims and XLA:CPU materialises the activation gradient transposed (measured:
    # 10 ms of a 16 ms MLP backward at B=20, L=64); flat, it is one plain matmul.
    h = nn.Dense(cfg.intermediate_size, dtype=self.dtype, kernel_init=init, dot_general=dg, name="intermediate")(
        x.reshape(-1, x.shape[-1]))
    h = _ACTIVATIONS[cfg.hidden_act](h)
    h = nn.Dense(cfg.hidden_size, dtype=self.dtype, kernel_init=init, dot_general=dg, name="output")(h).reshape(x.shape)
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="output_LayerNorm")(
        x + drop(h, deterministic=deterministic))


POOLINGS = ("cls", "mean")


def pool(states: jax.Array, attention_mask: jax.Array | None, pooling: str) -> jax.Array:
  """[B, L, H] final states → [B, H] pooler input: the [CLS] state, or the masked mean of all states."""
  if pooling == "cls":
    return states[:, 0]
  m = (jnp.ones(states.shape[:2], states.dtype) if attention_mask is None
       else attention_mask.astype(states.dtype))[..., None]
  return jnp.sum(states * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


class BertForSequenceClassification(nn.Module):
  """Returns class logits; `encode` returns last hidden states for parity checks.

  `pooling` picks what the pooler reads: "cls" (BERT's [CLS] state) or "mean"
  (the masked mean of all states). At HF's N(0, 0.02) init, attention is
  near-uniform and the residual stream carries each token's own embedding, so
  the [CLS] state is nearly the same for every input and a random-init model
  needs many steps before its logits depend on the text; the mean of all
  states depends on every token from step 0 (docs/diagnosis.md). Same
  parameters either way.
  """

  config: BertConfig
  dtype: Any = jnp.float32
  matmul_dtype: Any = None  # e.g. jnp.bfloat16: bf16 operands, `dtype` results (models/matmul.py)
  pooling: str = "cls"

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(cfg.initializer_range)
    dg = matmul.dot_general(self.matmul_dtype)
    self.embeddings = Embeddings(cfg, self.dtype)
    self.layers = [Layer(cfg, self.dtype, self.matmul_dtype, name=f"layer_{i}") for i in range(cfg.num_hidden_layers)]
    self.pooler = nn.Dense(cfg.hidden_size, dtype=self.dtype, kernel_init=init, dot_general=dg)
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
    self.classifier = nn.Dense(cfg.num_labels, dtype=self.dtype, kernel_init=init, dot_general=dg)

  def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None,
             token_type_ids=None, deterministic: bool = True):
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids and inputs_embeds")
    shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones(shape, jnp.int32)
    if token_type_ids is None:
      token_type_ids = jnp.zeros(shape, jnp.int32)
    chex.assert_equal_shape_prefix([attention_mask, token_type_ids], 2)
    x = self.embeddings(input_ids, inputs_embeds, token_type_ids, deterministic)
    for layer in self.layers:
      x = layer(x, attention_mask, deterministic)
    return x

  def __call__(self, input_ids=None, attention_mask=None, inputs_embeds=None,
               token_type_ids=None, deterministic: bool = True):
    x = self.encode(input_ids, attention_mask, inputs_embeds, token_type_ids, deterministic)
    pooled = jnp.tanh(self.pooler(pool(x, attention_mask, self.pooling)))
    logits = self.classifier(self.dropout(pooled, deterministic=deterministic))
    return logits.astype(jnp.promote_types(self.dtype, jnp.float32))


def stacked_attention(intermediates: dict) -> jax.Array:
  """[B, layers, heads, L, L] attention probabilities from the "intermediates" of a
  `mutable="intermediates"` apply (HF's `output_attentions`, stacked over layers)."""
  layers = sorted((k for k in intermediates if k.startswith("layer_")), key=lambda k: int(k[len("layer_"):]))
  return jnp.stack([intermediates[k]["attention"][ATTENTION][0] for k in layers], axis=1)


def init_params(model: BertForSequenceClassification, key: jax.Array, seq_len: int = 8) -> dict:
  """Fresh random parameters (HF's init: N(0, 0.02) weights, zero biases, unit LayerNorm)."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return model.init({"params": key}, input_ids=ids)["params"]


