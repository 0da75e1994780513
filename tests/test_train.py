"""Full-data training: its learning-rate schedule, early stopping and resume (end to end: test_main)."""

import os
import signal

import numpy as np
import pytest

from distill_jax import train
from distill_jax.errors import UserError


def test_schedule_warms_up_then_decays_to_zero():
  from configs import default
  cfg = default.get_config()
  cfg.train.learning_rate, cfg.train.warmup_steps = 1.0, 2
  lrs = train.lr_schedule(cfg, 6)
  assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1.0) and lrs[-1] < lrs[2] and np.all(lrs >= 0)


@pytest.mark.parametrize("epochs,patience,expected", [
    ([0.5, 0.6, np.nan], 1, [False, False, False]),  # still improving: never stops
    ([0.6, 0.5, np.nan], 1, [False, False, True]),   # one epoch past the best: stop before epoch 2
    ([0.6, 0.5, np.nan], 2, [False, False, False]),
    ([0.6, 0.6, np.nan], 1, [False, False, True]),   # a tie is no gain
    ([0.5, 0.6, np.nan], 0, [False, False, False]),  # patience 0 stops only after an epoch without a gain
    ([0.6, 0.5, np.nan], 0, [False, False, True]),
])
def test_early_stopping_reads_only_the_finished_epochs(epochs, patience, expected):
  history = np.asarray(epochs, np.float32)
  assert [train.stopped_early(history, e, patience) for e in range(3)] == expected


def _best_params(workdir):
  from distill_jax import checkpoint
  return checkpoint.restore_state(checkpoint.manager(os.path.join(workdir, "train_checkpoints"), create=False))


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
  """Ctrl-C mid-epoch saves the state; the rerun ends bitwise where a run never stopped does."""
  import jax
  from conftest import tiny_cli_config
  from distill_jax import main, metrics, signals
  from fault_cases import FAULTS
  case = FAULTS["interrupt_training"]
  # 48 training rows in batches of 16: 3 steps an epoch, 9 in all, a chunk (and a save) after every step.
  cfg = tiny_cli_config(tmp_path, mode="train", **{"train.epochs": 3, "train.chunk_steps": 1,
                                                   "train.checkpoint_every": 100, "train.patience": 3})
  full = main.run(cfg, str(tmp_path / "full"))
  log = metrics.Progress.log

  def ctrl_c_at_step_4(self, step, **kw):
    log(self, step, **kw)
    if step == 4:
      signals._handle(signal.SIGINT, None)  # arrives mid-chunk, as a real Ctrl-C would
  monkeypatch.setattr(metrics.Progress, "log", ctrl_c_at_step_4)
  with pytest.raises(signals.Interrupted) as stop:
    main.run(cfg, str(tmp_path / "part"))
  assert stop.value.message.startswith("interrupted at step 4; training state saved in ") and \
      stop.value.message.endswith("rerun the same command to resume"), case["sees"]
  monkeypatch.undo()
  again = main.run(cfg, str(tmp_path / "part"))
  for key in ("eval_accuracy", "best_epoch", "holdout_accuracy_per_epoch", "steps"):
    assert again[key] == full[key], (key, case["kept"])
  for x, y in zip(jax.tree_util.tree_leaves(_best_params(str(tmp_path / "full"))),
                  jax.tree_util.tree_leaves(_best_params(str(tmp_path / "part")))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  steps = [r["step"] for r in metrics.read(str(tmp_path / "part"), "metrics_train.jsonl") if "train_loss" in r]
  assert steps == list(range(1, 10))  # records past the saved state were replaced, not duplicated

  case = FAULTS["resume_training_with_other_config"]
  before = sorted(os.listdir(tmp_path / "part" / "train_state"))
  other = tiny_cli_config(tmp_path, mode="train", **{"train.epochs": 3, "train.learning_rate": 0.5})
  with pytest.raises(UserError, match=r"checkpoint in .*train_state was written with train.learning_rate=0.001 but "
                                      r"the config has 0.5; use --config.train.learning_rate=0.001 or a new --workdir"):
    main.run(other, str(tmp_path / "part"))
  assert sorted(os.listdir(tmp_path / "part" / "train_state")) == before, case["kept"]
