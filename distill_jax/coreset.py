"""Coreset baselines: real subsets chosen by features, and real subsets of equal storage.

A distilled set earns its keep only against the best small real subsets, not
just a random one. Every subset here is trained and scored by the same
`evaluate` path as the random real subset (step size tuned on held-out rows,
`evaluate.seeds` fresh θ0), so the methods differ in the rows they pick only.

- "random": `data.sample_per_class`, the draw the random baseline always used.
- "kcenter": greedy k-center (farthest point) per class, starting from the
  point nearest the class mean, as in the DiLM and CondenseLM baselines.
- "herding": per class, greedily the point that brings the mean of the picked
  features closest to the class mean (Welling 2009; Chen et al. 2010; the
  exemplar herding of Rebuffi et al. 2017).
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import data, modeling
from distill_jax.errors import UserError
from distill_jax.models import bert

METHODS = ("random", "kcenter", "herding")


@functools.lru_cache(maxsize=None)
def _pooled_fn(model: bert.BertForSequenceClassification) -> Callable:
  @jax.jit
  def pooled(params, ids, mask):
    states = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                         method=bert.BertForSequenceClassification.encode)
    return bert.pool(states, mask, "mean").astype(jnp.float32)
  return pooled


def features(model: bert.BertForSequenceClassification, params: modeling.Params, split: data.Split,
             batch_size: int = 256) -> np.ndarray:
  """[N, H] masked means of the body's final states (MiniLM's sentence-embedding pooling).

  With a pretrained body these are sentence embeddings; with a random-init θ0
  they are random features, and the coresets built on them are only as good
  as those. The classifier head is unused. Batches of similar length
  (`data.length_batches`) skip most of the padding.
  """
  pooled = _pooled_fn(model)
  out = np.zeros((len(split), model.config.hidden_size), np.float32)
  for idx, ids, mask in data.length_batches(split, batch_size):
    out[idx] = np.asarray(pooled(params, ids, mask))[:len(idx)]
  return out


def _kcenter(x: np.ndarray, n: int) -> np.ndarray:
  """Farthest-point picks from the point nearest the mean: each next center is the row farthest
  from all centers so far, which greedily minimises the largest distance of a row to its center."""
  sq = np.einsum("ij,ij->i", x, x)
  i, picks, dist = int(np.argmin(np.sum((x - x.mean(0)) ** 2, axis=1))), [], np.full(len(x), np.inf)
  for _ in range(n):
    picks.append(i)
    dist = np.minimum(dist, sq - 2 * x @ x[i] + sq[i])
    dist[i] = -np.inf  # never twice; a duplicate of a center (distance 0) is another row and may come later
    i = int(np.argmax(dist))
  return np.asarray(picks)


def _herding(x: np.ndarray, n: int) -> np.ndarray:
  """Picks that keep the running mean of picked rows closest to the class mean, no repeats.

  After t picks with sum s, the next row minimises ‖(t+1)·μ − s − x_i‖², i.e.
  ‖x_i‖² − 2 r·x_i with r = (t+1)·μ − s.
  """
  mu, sq, total = x.mean(0), np.einsum("ij,ij->i", x, x), np.zeros(x.shape[1], x.dtype)
  taken, picks = np.zeros(len(x), bool), []
  for t in range(n):
    cost = sq - 2 * x @ ((t + 1) * mu - total)
    cost[taken] = np.inf
    i = int(np.argmin(cost))
    picks.append(i)
    taken[i], total = True, total + x[i]
  return np.asarray(picks)


def select(method: str, feats: np.ndarray | None, labels: np.ndarray, n_per_class: int, num_classes: int,
           seed: int) -> np.ndarray:
  """Row indices of `n_per_class` rows per class, class 0's first, deterministic in `seed`.

  "random" ignores `feats` and is `data.sample_per_class`, so it draws the rows
  the random baseline always drew; "kcenter" and "herding" are deterministic
  in the features (`seed` unused).
  """
  if method not in METHODS:
    raise UserError(f"unknown coreset method {method!r}; use one of {METHODS}")
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes)
  if n_per_class > counts.min():
    c = int(np.argmin(counts))
    raise UserError(f"class {c} has only {counts[c]} candidate rows but n_per_class={n_per_class}; raise "
                    "--config.evaluate.coreset_pool (0 = every pool row) or lower synthetic.n_per_class")
  if method == "random":
    return data.sample_per_class(labels, n_per_class, num_classes, seed)
  chex.assert_rank(feats, 2)
  chex.assert_equal(len(feats), len(labels))
  pick = _kcenter if method == "kcenter" else _herding
  parts = []
  for c in range(num_classes):
    rows = np.flatnonzero(labels == c)
    parts.append(rows[pick(np.asarray(feats[rows], np.float64), n_per_class)])
  return np.concatenate(parts).astype(np.int64)


def candidates(pool: np.ndarray, limit: int, seed: int) -> np.ndarray:
  """The pool rows the feature-based methods choose from: `limit` random ones (0 = all), sorted.

  Features of every row of a large split cost minutes on a CPU; a random cap
  keeps the class balance of the pool in expectation.
  """
  if not limit or limit >= len(pool):
    return pool
  return np.sort(np.random.default_rng(seed).choice(pool, limit, replace=False))


def within_bytes(labels: np.ndarray, row_bytes: np.ndarray, budget: int, num_classes: int,
                 seed: int) -> np.ndarray:
  """Random rows, dealt one per class in turn, while their total bytes stay within `budget`.

  Class counts differ by at most one until a class runs out of rows; the result
  is the longest such prefix (every row, if the budget exceeds them all).
  """
  chex.assert_equal_shape([labels, row_bytes])
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
  rank = np.concatenate([np.arange(len(rows)) for rows in per_class])
  rows = np.concatenate(per_class)
  dealt = rows[np.argsort(rank, kind="stable")]  # rank 0 of every class, then rank 1, ...
  fits = np.cumsum(row_bytes[dealt]) <= budget
  return dealt[:int(np.sum(fits))]
