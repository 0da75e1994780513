"""Full-data training's learning-rate schedule (its model selection: test_main, on data.holdout rows)."""

import numpy as np
import pytest

from distill_jax import train


def test_schedule_warms_up_then_decays_to_zero():
  from configs import default
  cfg = default.get_config()
  cfg.train.learning_rate, cfg.train.warmup_steps = 1.0, 2
  lrs = train.lr_schedule(cfg, 6)
  assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1.0) and lrs[-1] < lrs[2] and np.all(lrs >= 0)
