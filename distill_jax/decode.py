"""Nearest-token decoding of synthetic embeddings, so a distilled set can be read
and re-used as ordinary text."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


@jax.jit
def _cosine_scores(x: jax.Array, table: jax.Array) -> jax.Array:
  xn = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
  tn = table / (jnp.linalg.norm(table, axis=-1, keepdims=True) + 1e-12)
  return xn @ tn.T


@jax.jit
def _neg_l2_scores(x: jax.Array, table: jax.Array) -> jax.Array:
  # −‖x − t‖² up to a per-row constant: 2·x·t − ‖t‖².
  return 2.0 * x @ table.T - jnp.sum(table * table, axis=-1)


def nearest_tokens(embeds: jax.Array, table: jax.Array, metric: str = "cosine") -> jax.Array:
  """[M, L, H] embeddings → [M, L] token ids of the closest rows of `table` [V, H]."""
  chex.assert_rank([embeds, table], [3, 2])
  score = {"cosine": _cosine_scores, "l2": _neg_l2_scores}[metric]
  flat = embeds.reshape(-1, embeds.shape[-1])
  ids = jnp.concatenate([jnp.argmax(score(flat[i:i + 512], table), -1)
                         for i in range(0, flat.shape[0], 512)])
  return ids.reshape(embeds.shape[:2]).astype(jnp.int32)


def embeddings(syn_data: dict, table: jax.Array) -> jax.Array:
  """[M, L, H] inputs of a materialised set: its embeddings, or its token distributions through `table`."""
  if "token_probs" in syn_data:
    return jnp.einsum("mlv,vh->mlh", syn_data["token_probs"], table[syn_data["token_vocab"][0]])
  return syn_data["inputs_embeds"]


def decode_set(syn_data: dict, table: jax.Array, metric: str = "cosine") -> jax.Array:
  """[M, L] token ids: each distribution's most likely token, or each embedding's nearest row of `table`."""
  if "token_probs" in syn_data:
    return syn_data["token_vocab"][0][jnp.argmax(syn_data["token_probs"], -1)]
  return nearest_tokens(syn_data["inputs_embeds"], table, metric)


def texts(ids, mask, tokenizer) -> list[str]:
  """Readable strings (padding dropped, special tokens kept so [CLS]/[SEP] drift is visible)."""
  out = []
  for row, m in zip(jax.device_get(ids), jax.device_get(mask)):
    out.append(" ".join(tokenizer.convert_ids_to_tokens([int(t) for t, k in zip(row, m) if k])))
  return out
