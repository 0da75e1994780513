"""The tokenized split that everything downstream consumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


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
