"""The tokenized split that everything downstream consumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from distill_jax.errors import UserError


@dataclasses.dataclass
class Split:
  """A tokenized split: int32 arrays with one row per example."""

  input_ids: np.ndarray  # [N, L] int32, [CLS] ... [SEP] [PAD]...
  attention_mask: np.ndarray  # [N, L] int32, 1 on real tokens.
  labels: np.ndarray  # [N] int32.
  texts: list[str]

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
    """Rows at `indices` (ints or a boolean mask), in that order."""
    idx = np.asarray(indices)
    if idx.dtype == np.bool_:
      idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64).reshape(-1)
    return Split(
        input_ids=self.input_ids[idx],
        attention_mask=self.attention_mask[idx],
        labels=self.labels[idx],
        texts=[self.texts[i] for i in idx.tolist()],
    )


def held_out_indices(n: int, rows: int, seed: int) -> np.ndarray:
  """The `rows` indices of an n-row split that `holdout` holds out, in their (random) draw order."""
  return np.random.default_rng(seed).permutation(n)[:rows]


def holdout(split: Split, rows: int, seed: int) -> tuple[Split, Split]:
  """(rows to learn from, `rows` random rows held out from all learning); files may be sorted by label.

  The held-out rows pick the full-data model's epoch, the baselines' step sizes
  and show distillation's progress, so no choice is ever made on the eval split.
  They stay in random order, so any prefix (the progress checks score the first
  `outer.eval_rows`) is a random draw too: in file order, a prefix of Rotten
  Tomatoes' or IMDB's held-out rows is almost all one class.
  """
  if rows * 2 > len(split):
    raise UserError(f"data.holdout_rows={rows} would hold out over half of the {len(split)} training rows; "
                    f"lower --config.data.holdout_rows (e.g. {max(1, len(split) // 10)})")
  held = held_out_indices(len(split), rows, seed)
  return split.subset(np.setdiff1d(np.arange(len(split)), held)), split.subset(held)
