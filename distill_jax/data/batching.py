"""Sampling and batching of tokenized splits, deterministic in the seed."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from distill_jax.data.splits import Split
from distill_jax.errors import UserError


def sample_per_class(labels: np.ndarray, n_per_class: int, num_classes: int,
                     seed: int) -> np.ndarray:
  """Indices of `n_per_class` random examples per class, class 0's first.

  Used to initialise distilled data from real examples; deterministic in
  `seed`.
  """
  if n_per_class < 1:
    raise UserError(f"n_per_class={n_per_class} must be >= 1")
  labels = np.asarray(labels)
  counts = [int(np.sum(labels == c)) for c in range(num_classes)]
  for c, count in enumerate(counts):
    if count < n_per_class:
      fix = (f"lower n_per_class to at most {min(counts)}" if min(counts)
             else "load rows of every class")
      raise UserError(
          f"class {c} has only {count} examples but n_per_class={n_per_class};"
          f" {fix} (or load more rows)")
  rng = np.random.default_rng(_seed_words(seed))
  parts = [rng.choice(np.flatnonzero(labels == c), size=n_per_class,
                      replace=False) for c in range(num_classes)]
  return np.concatenate(parts).astype(np.int64)


def _seed_words(*values: int) -> list[int]:
  # SeedSequence rejects negative ints; map them into uint64 deterministically.
  return [int(v) % 2**64 for v in values]


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng(_seed_words(seed, epoch)).permutation(n)


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
  """How many batches one epoch over `n` examples yields."""
  return n // batch_size if drop_remainder else math.ceil(n / batch_size)


def _gather(split: Split, idx: np.ndarray) -> dict[str, np.ndarray]:
  return {
      "input_ids": split.input_ids[idx],
      "attention_mask": split.attention_mask[idx],
      "labels": split.labels[idx],
  }


def _check_batch_size(split: Split, batch_size: int,
                      drop_remainder: bool) -> None:
  if batch_size < 1:
    raise UserError(f"batch_size={batch_size} must be >= 1")
  if drop_remainder and len(split) < batch_size:
    raise UserError(
        f"batch_size={batch_size} exceeds the split's {len(split)} examples,"
        " so no full batch exists; lower batch_size or load more rows")


def batch_iterator(
    split: Split,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of batches; the order depends only on (seed, epoch).

  With `drop_remainder=False` the last batch is simply smaller.
  """
  _check_batch_size(split, batch_size, drop_remainder)
  order = _epoch_order(len(split), seed, epoch, shuffle)
  count = num_batches(len(split), batch_size, drop_remainder)

  def generate() -> Iterator[dict[str, np.ndarray]]:
    for b in range(count):
      yield _gather(split, order[b * batch_size:(b + 1) * batch_size])

  return generate()


def length_batches(split: Split, batch_size: int,
                   multiple: int = 16) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Inference batches of rows of similar length, each cut to its longest row rounded up to `multiple`.

  Padding adds nothing under the attention mask but costs a forward pass as much
  as a real token: SST-2's validation sentences fill a third of max_len 64 and its
  training phrases less. Sorting by length and cutting each batch to what it needs
  saves that; rounding keeps the compiled shapes to max_len / `multiple`, and the
  last batch is padded with empty rows to `batch_size` so it reuses one of them.
  Yields (row indices, input_ids, attention_mask); only the first len(indices) rows
  of the arrays are real. Rows must be padded on the right, as `tokenize` makes them.
  """
  if batch_size < 1:
    raise UserError(f"batch_size={batch_size} must be >= 1")
  lengths = split.attention_mask.sum(axis=1)
  max_len = split.input_ids.shape[1]
  order = np.argsort(lengths, kind="stable")
  for start in range(0, len(split), batch_size):
    idx = order[start:start + batch_size]
    cut = min(max_len, -(-max(int(lengths[idx].max()), 1) // multiple) * multiple)
    pad = ((0, batch_size - len(idx)), (0, 0))
    yield (idx, np.pad(split.input_ids[idx, :cut], pad),
           np.pad(split.attention_mask[idx, :cut], pad))


def stacked_batches(split: Split, batch_size: int, steps: int, *,
                    seed: int) -> dict[str, np.ndarray]:
  """`steps` training batches stacked on a leading axis, for `lax.scan`.

  Batch i equals the i-th batch of `batch_iterator(split, batch_size,
  seed=seed, epoch=0, 1, ...)` chained over epochs (partial batches dropped).
  Arrays are [steps, batch_size, ...].
  """
  if steps < 1:
    raise UserError(f"steps={steps} must be >= 1")
  _check_batch_size(split, batch_size, drop_remainder=True)
  per_epoch = len(split) // batch_size
  epochs = math.ceil(steps / per_epoch)
  order = np.concatenate([
      _epoch_order(len(split), seed, e, True)[:per_epoch * batch_size]
      for e in range(epochs)
  ])
  return _gather(split, order[:steps * batch_size].reshape(steps, batch_size))
