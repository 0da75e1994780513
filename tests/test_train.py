"""Full-data training's model selection: held-out training rows, never the eval split."""

import numpy as np
import pytest

from distill_jax import data, train
from distill_jax.errors import UserError


def _split(n: int) -> data.Split:
  ids = np.arange(n, dtype=np.int32)[:, None].repeat(4, 1)
  return data.Split(input_ids=ids, attention_mask=np.ones_like(ids), labels=(np.arange(n) % 2).astype(np.int32),
                    texts=[str(i) for i in range(n)])


def test_holdout_rows_are_disjoint_from_training_rows_and_cover_the_split():
  rows, held = train.holdout(_split(100), 10, seed=0)
  assert len(held) == 10 and len(rows) == 90
  kept, out = set(rows.input_ids[:, 0]), set(held.input_ids[:, 0])
  assert not kept & out and kept | out == set(range(100))
  assert sorted(out) != list(range(10))  # random rows, not the file's first (files can be sorted by label)
  again, held_again = train.holdout(_split(100), 10, seed=0)
  np.testing.assert_array_equal(held.input_ids, held_again.input_ids)


def test_holding_out_half_the_split_is_refused_with_the_fix():
  with pytest.raises(UserError, match="lower --config.train.holdout_rows"):
    train.holdout(_split(30), 16, seed=0)


def test_schedule_warms_up_then_decays_to_zero():
  from configs import default
  cfg = default.get_config()
  cfg.train.learning_rate, cfg.train.warmup_steps = 1.0, 2
  lrs = train.lr_schedule(cfg, 6)
  assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1.0) and lrs[-1] < lrs[2] and np.all(lrs >= 0)
